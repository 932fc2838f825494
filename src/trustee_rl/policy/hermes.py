"""The Hermes/Qwen tool-calling text format: tools in the system turn, `<tool_call>` in replies.

Qwen3 speaks this format natively, so the 8B path and the small embedded model share one rendering.
"""

from __future__ import annotations

import json
import re
from typing import Any

from trustee_rl.schema import Message, Tool, ToolCall

TOOL_CALL_RE = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)

TOOLS_PREAMBLE = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_POSTAMBLE = (
    "</tools>\n\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)


def tools_system_prompt(system_prompt: str, tools: list[Tool]) -> str:
    if not tools:
        return system_prompt
    specs = "\n".join(json.dumps(tool.to_openai(), ensure_ascii=False) for tool in tools)
    block = f"{TOOLS_PREAMBLE}\n{specs}\n{TOOLS_POSTAMBLE}"
    # As Qwen3's template does: an empty system prompt leaves the tools block alone in the turn.
    return f"{system_prompt}\n\n{block}" if system_prompt else block


def format_tool_call(call: ToolCall) -> str:
    body = json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False)
    return f"<tool_call>\n{body}\n</tool_call>"


def parse_assistant_text(text: str) -> tuple[str, list[ToolCall]]:
    """Split a reply into its prose and its tool calls. A call that does not parse is kept,
    with `parse_error` set, so the judge sees it."""
    calls = [_parse_call(match.group(1)) for match in TOOL_CALL_RE.finditer(text)]
    prose = TOOL_CALL_RE.sub("", text).strip()
    return prose, calls


def _parse_call(body: str) -> ToolCall:
    try:
        data: Any = json.loads(body)
    except json.JSONDecodeError as error:
        return ToolCall(name="", parse_error=f"not JSON: {error.msg}")
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return ToolCall(name="", parse_error="expected an object with a string 'name'")
    arguments = data.get("arguments", {})
    if isinstance(arguments, str):  # some models double-encode
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return ToolCall(name=data["name"], parse_error="arguments are not a JSON object")
    if not isinstance(arguments, dict):
        return ToolCall(name=data["name"], parse_error="arguments are not a JSON object")
    return ToolCall(name=data["name"], arguments=arguments)


def to_text_messages(messages: list[Message], tools: list[Tool]) -> list[dict[str, Any]]:
    """OpenAI-format messages for a model without native tool calling: tools rendered into the
    system turn, calls as `<tool_call>` text, results as `<tool_response>` user turns (Qwen's way)."""
    rendered: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            rendered.append(
                {"role": "system", "content": tools_system_prompt(message.content or "", tools)}
            )
        elif message.role == "assistant":
            parts = [message.content] if message.content else []
            parts += [format_tool_call(call) for call in message.tool_calls]
            rendered.append({"role": "assistant", "content": "\n".join(parts)})
        elif message.role == "tool":
            block = f"<tool_response>\n{message.content}\n</tool_response>"
            if rendered and rendered[-1]["role"] == "user" and rendered[-1].get("tool_block"):
                rendered[-1]["content"] += "\n" + block
            else:
                rendered.append({"role": "user", "content": block, "tool_block": True})
        else:
            rendered.append({"role": message.role, "content": message.content or ""})
    for item in rendered:
        item.pop("tool_block", None)
    return rendered
