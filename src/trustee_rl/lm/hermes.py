"""The Hermes/Qwen tool-calling text format: tools in the system turn, `<tool_call>` in replies,
results in `<tool_response>` user turns. The one renderer of it: the policy's chat formats, the
embedded backend and the warm start all go through here.

Qwen3 speaks this format natively, so the 8B path and the small embedded model share one rendering.
It works on OpenAI-format dicts, the lingua franca of every backend (`Message.to_openai()`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from typing import Any

from trustee_rl.lm.json_repair import decode_prefix, loads, skip_space
from trustee_rl.schema import Message, Tool, ToolCall

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"

TOOLS_PREAMBLE = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_POSTAMBLE = (
    "</tools>\n\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)


ToolSpec = Tool | dict[str, Any]  # a Tool, or its OpenAI spec
Turn = Message | dict[str, Any]  # a Message, or its OpenAI form


def tools_system_prompt(system_prompt: str, tools: Sequence[ToolSpec]) -> str:
    if not tools:
        return system_prompt
    specs = "\n".join(json.dumps(_spec(tool), ensure_ascii=False) for tool in tools)
    block = f"{TOOLS_PREAMBLE}\n{specs}\n{TOOLS_POSTAMBLE}"
    # As Qwen3's template does: an empty system prompt leaves the tools block alone in the turn.
    return f"{system_prompt}\n\n{block}" if system_prompt else block


def format_tool_call(call: ToolCall) -> str:
    return _call_text(call.name, call.arguments)


def _call_text(name: str, arguments: Any) -> str:
    """One call as the model writes it; `arguments` may arrive JSON-encoded (OpenAI wire format)."""
    if isinstance(arguments, str):
        with contextlib.suppress(json.JSONDecodeError):
            arguments = json.loads(arguments)
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"<tool_call>\n{body}\n</tool_call>"


def parse_assistant_text(text: str) -> tuple[str, list[ToolCall]]:
    """Split a reply into its prose and its tool calls: each `<tool_call>` up to its
    `</tool_call>` or the end of the text (cut at max tokens). A call that does not parse is
    kept, with `parse_error` set, so the judge sees it. Text without `<tool_call>` has no calls."""
    prose: list[str] = []
    calls: list[ToolCall] = []
    position = 0
    while (start := text.find(CALL_OPEN, position)) >= 0:
        prose.append(text[position:start])
        call, position = _read_call(text, start + len(CALL_OPEN))
        calls.append(call)
    prose.append(text[position:])
    return "".join(prose).strip(), calls


def _read_call(text: str, body_start: int) -> tuple[ToolCall, int]:
    """The call whose body starts at `body_start`, and where its block ends. The body is read as
    JSON, so a `</tool_call>` inside an argument string does not cut it short."""
    try:
        data, end = decode_prefix(text, skip_space(text, body_start))
    except ValueError as error:
        reason = error.msg if isinstance(error, json.JSONDecodeError) else str(error)
        return _unreadable(text, body_start, reason)
    after = skip_space(text, end)
    if after == len(text):
        return _call(data), after
    if text.startswith(CALL_CLOSE, after):
        return _call(data), after + len(CALL_CLOSE)
    return _unreadable(text, end, "extra text after the call")


def _unreadable(text: str, start: int, reason: str) -> tuple[ToolCall, int]:
    """A call that is not JSON; its block runs to the next `</tool_call>` (or the end)."""
    close = text.find(CALL_CLOSE, start)
    block_end = len(text) if close < 0 else close + len(CALL_CLOSE)
    return ToolCall(name="", parse_error=f"not JSON: {reason}"), block_end


def _call(data: Any) -> ToolCall:
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return ToolCall(name="", parse_error="expected an object with a string 'name'")
    arguments = data.get("arguments", {})
    if isinstance(arguments, str):  # some models double-encode
        try:
            arguments = loads(arguments)
        except ValueError:
            return ToolCall(name=data["name"], parse_error="arguments are not a JSON object")
    if not isinstance(arguments, dict):
        return ToolCall(name=data["name"], parse_error="arguments are not a JSON object")
    return ToolCall(name=data["name"], arguments=arguments)


def to_text_messages(messages: Sequence[Turn], tools: Sequence[ToolSpec]) -> list[dict[str, str]]:
    """OpenAI-format messages for a model without native tool calling: tools rendered into the
    opening system turn (one made for them where the conversation has none), calls as
    `<tool_call>` text, results as `<tool_response>` user turns (Qwen's way)."""
    turns = [turn.to_openai() if isinstance(turn, Message) else turn for turn in messages]
    if tools and (not turns or turns[0]["role"] != "system"):
        turns = [{"role": "system", "content": ""}, *turns]
    rendered: list[dict[str, str]] = []
    results_open = False  # whether the last rendered turn is a block of tool results
    for index, message in enumerate(turns):
        role, content = message["role"], message.get("content") or ""
        if role == "tool":
            block = f"<tool_response>\n{content}\n</tool_response>"
            if results_open:
                rendered[-1]["content"] += "\n" + block
            else:
                rendered.append({"role": "user", "content": block})
            results_open = True
            continue
        results_open = False
        if role == "system" and index == 0:
            rendered.append({"role": "system", "content": tools_system_prompt(content, tools)})
        elif role == "assistant":
            parts = [content] if content else []
            for call in message.get("tool_calls") or []:
                function = call.get("function", call)
                parts.append(_call_text(function.get("name", ""), function.get("arguments", {})))
            rendered.append({"role": "assistant", "content": "\n".join(parts)})
        else:
            rendered.append({"role": role, "content": content})
    return rendered


def _spec(tool: ToolSpec) -> dict[str, Any]:
    return tool.to_openai() if isinstance(tool, Tool) else tool
