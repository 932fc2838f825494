"""BFCL's ground truth played as a policy, to prove the BFCL plumbing (test support)."""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from typing import Any

from trustee_rl.evaluate.bfcl import MULTI_TURN, Entry, bfcl_tools
from trustee_rl.lm.hermes import format_tool_call, parse_assistant_text
from trustee_rl.policy.base import Conversation
from trustee_rl.schema import Message, ToolCall


class GroundTruthPolicy:
    """Replays BFCL's ground truth as if a model wrote it: the first allowed value of every
    argument, written as `<tool_call>` text and read back by the training parser. Scoring 100%
    proves the plumbing (rendering, parsing, decoding, checking), not a model."""

    name = "bfcl-ground-truth"
    trainable = False

    def __init__(self, entries: list[Entry]) -> None:
        self.replies: dict[str, str] = {}
        for entry in entries:
            if entry.category in MULTI_TURN:
                functions = entry.data["function"] + [
                    function
                    for added in entry.data.get("missed_function", {}).values()
                    for function in added
                ]
                order = {f["name"]: list(f["parameters"]["properties"]) for f in functions}
                for turn, calls in enumerate(entry.answer):
                    self.replies[f"{entry.id}:{turn}:0"] = "".join(
                        format_tool_call(parse_call_text(call, order)) for call in calls
                    )
            elif entry.answer is not None:
                docs = {function["name"]: function for function in entry.checked_functions}
                language = entry.category.removeprefix("simple_")
                language = language if language in ("java", "javascript") else "python"
                calls = [
                    ToolCall(
                        name=name.replace(".", "_"),
                        arguments=first_choice_arguments(options, docs[name], language),
                    )
                    for answer in entry.answer
                    for name, options in answer.items()
                ]
                self.replies[entry.id] = "".join(format_tool_call(call) for call in calls)
            elif entry.category == "live_relevance":  # no ground truth: any call is right
                first = bfcl_tools(entry.data["function"])[0]
                self.replies[entry.id] = format_tool_call(ToolCall(name=first.name))

    async def act(self, conversations: Sequence[Conversation]) -> list[Message]:
        replies = []
        for conversation in conversations:
            # Irrelevance entries, and multi-turn steps after a turn's calls, get plain text.
            text = self.replies.get(conversation.key, "")
            content, calls = parse_assistant_text(text)
            replies.append(Message(role="assistant", content=content or "Done.", tool_calls=calls))
        return replies

    async def aclose(self) -> None:
        return None


def first_choice_arguments(
    options: dict[str, list[Any]], doc: dict[str, Any], language: str = "python"
) -> dict[str, Any]:
    """One call from BFCL's possible answers and the function's doc: each documented argument's
    first allowed value; an argument allowed to be absent ("") is left out unless the doc says it
    is required. Java and JavaScript values are written as the source text BFCL asks for."""
    properties = doc["parameters"].get("properties", {})
    required = set(doc["parameters"].get("required", []))
    arguments = {}
    for name, allowed in options.items():
        present = [value for value in allowed if value != ""]
        if name not in properties or not present or (name not in required and allowed[0] == ""):
            continue
        value = _resolve_choice(present[0])
        if language != "python":
            value = source_literal(value, properties[name], language)
        arguments[name] = value
    return arguments


def _resolve_choice(value: Any) -> Any:
    # BFCL's dict checker reads one level: a dict's values are lists of allowed literals.
    if isinstance(value, dict):
        return {
            key: (allowed[0] if isinstance(allowed, list) else allowed)
            for key, allowed in value.items()
            if not (isinstance(allowed, list) and (not allowed or allowed[0] == ""))
        }
    if isinstance(value, list):
        return [_resolve_choice(item) for item in value]
    return value


def source_literal(value: Any, doc: dict[str, Any], language: str) -> str:
    """`value` as Java or JavaScript source, in the forms BFCL's type converters read."""
    kind = doc.get("type", "any")
    items = doc.get("items", {})
    if isinstance(value, str):  # already source text, as BFCL writes most Java and JS answers
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if language == "java":
        if kind == "long":
            return f"{value}L"
        if kind == "float":
            return f"{value}f"
        if kind == "char":
            return f"'{value}'"
        if kind == "Array":
            return (
                "new Object[]{" + ", ".join(source_literal(v, items, language) for v in value) + "}"
            )
        if kind == "ArrayList":
            quote = '"' if items.get("type") == "String" else ""
            inner = ", ".join(f"{quote}{source_literal(v, items, language)}{quote}" for v in value)
            return f"new ArrayList<>(Arrays.asList({inner}))"
        if kind == "HashMap":
            puts = " ".join(f'put("{k}", {json.dumps(v)});' for k, v in value.items())
            return "new HashMap<String, Object>() {{ " + puts + " }}"
        return str(value)
    if kind == "Bigint":
        return f"{value}n"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def parse_call_text(text: str, parameter_order: dict[str, list[str]]) -> ToolCall:
    """A multi-turn ground-truth call, written as Python call text, as a ToolCall; positional
    arguments, as in `sort('final_report.pdf')`, are named in the order of the function's doc."""
    node = ast.parse(text, mode="eval").body
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise ValueError(f"not a plain function call: {text!r}")
    name = node.func.id
    positional = dict(
        zip(parameter_order[name], (ast.literal_eval(arg) for arg in node.args), strict=False)
    )
    named = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
    return ToolCall(name=name, arguments=positional | named)
