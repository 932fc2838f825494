"""The tool simulator: schema checks first (no LM), then answers from a per-episode world ledger.

An identical call returns the identical result; new results are generated with the ledger and the
user's private facts in view so the world stays consistent. The ledger lives and dies with one
episode: nothing is shared between episodes or runs.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema

from trustee_rl.lm.base import LM
from trustee_rl.schema import Message, Task, Tool, ToolCall
from trustee_rl.sim.prompts import load_prompt
from trustee_rl.sim.structured import SimulatorContext, ask_json

FALLBACK_RETURNS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"enum": ["ok", "error"]},
        "message": {"type": "string", "maxLength": 200},
    },
    "required": ["status", "message"],
    "additionalProperties": False,
}


def call_error(call: ToolCall, task: Task) -> str | None:
    """Why a call cannot be executed, or None when it is well-formed for an offered tool."""
    if call.parse_error:
        return f"could not parse the tool call: {call.parse_error}"
    tool = task.tool(call.name)
    if tool is None:
        return f"unknown tool '{call.name}'; available: {', '.join(t.name for t in task.tools)}"
    problem = next(
        iter(jsonschema.Draft202012Validator(tool.parameters).iter_errors(call.arguments)), None
    )
    if problem is not None:
        where = "/".join(str(p) for p in problem.absolute_path) or "arguments"
        return f"invalid arguments for {tool.name} at {where}: {problem.message[:200]}"
    return None


class ToolSimulator:
    def __init__(self, lm: LM, task: Task, context: SimulatorContext) -> None:
        self.lm = lm
        self.task = task
        self.context = context
        self.prompt = load_prompt("tool")
        self.ledger: dict[str, str] = {}  # call signature -> result JSON

    async def execute(self, call: ToolCall) -> Message:
        error = call_error(call, self.task)
        if error is not None:
            return self._result(call, json.dumps({"error": error}))
        signature = call.signature()
        if signature not in self.ledger:
            tool = self.task.tool(call.name)
            assert tool is not None  # call_error checked it
            self.ledger[signature] = await self._simulate(tool, call, signature)
        return self._result(call, self.ledger[signature])

    async def _simulate(self, tool: Tool, call: ToolCall, signature: str) -> str:
        earlier = "\n".join(f"{sig} -> {result}" for sig, result in self.ledger.items()) or "(none)"
        facts = "; ".join(f"{k}: {v}" for k, v in self.task.private_facts.items()) or "(none)"
        messages = self.prompt.render(
            domain_title=self.task.domain.replace("_", " "),
            facts=facts,
            tool_name=tool.name,
            tool_description=tool.description,
            ledger=earlier,
            call=json.dumps(call.arguments, sort_keys=True),
        )
        value = await ask_json(
            self.lm,
            self.context,
            role="tool",
            prompt=self.prompt,
            messages=messages,
            schema=tool.returns or FALLBACK_RETURNS,
            # Seeded by the call itself: parallel calls give the same results in any order.
            seed_labels=("tool", signature),
        )
        return json.dumps(value, ensure_ascii=False)

    def _result(self, call: ToolCall, content: str) -> Message:
        return Message(role="tool", content=content, tool_call_id=call.id, name=call.name)
