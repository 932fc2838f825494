"""The first stage: a persona becomes a plan with its own tools, restriction and workflow (the
plan's tools are checked in the next stage, synth/toolcheck.py)."""

from __future__ import annotations

from typing import Any

from trustee_rl.lm.base import LM
from trustee_rl.schema import SimCall
from trustee_rl.sim.prompts import load_prompt
from trustee_rl.sim.structured import SimulatorContext, SimulatorError, ask_json
from trustee_rl.synth.records import Plan, StageOutcome, SynthPersona

MIN_TOOLS, MAX_TOOLS = 3, 5
MIN_STEPS, MAX_STEPS = 5, 7
_NAME = {"type": "string", "pattern": "^[a-z][a-z0-9_]{2,40}$"}
_SENTENCE = {"type": "string", "minLength": 10, "maxLength": 300}

# The tool schemas are free-form here: whether they are valid JSON Schema is the tool check's
# question, so a broken one is repaired or refused there, with the reason recorded.
TOOL_SPEC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": _NAME,
        "description": _SENTENCE,
        "parameters": {"type": "object"},
        "returns": {"type": "object"},
    },
    "required": ["name", "description", "parameters", "returns"],
    "additionalProperties": False,
}

PLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "domain": _NAME,
        "description": _SENTENCE,
        "goal": _SENTENCE,
        "tools": {
            "type": "array",
            "minItems": MIN_TOOLS,
            "maxItems": MAX_TOOLS,
            "items": TOOL_SPEC_SCHEMA,
        },
        "restriction": {
            "type": "object",
            "properties": {
                "tool": {"type": "string"},
                "forbidden_use": {"type": "string", "minLength": 5, "maxLength": 200},
            },
            "required": ["tool", "forbidden_use"],
            "additionalProperties": False,
        },
        "workflow": {
            "type": "array",
            "minItems": MIN_STEPS,
            "maxItems": MAX_STEPS,
            "items": {
                "type": "object",
                "properties": {"action": _SENTENCE, "tool": {"type": ["string", "null"]}},
                "required": ["action", "tool"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["domain", "description", "goal", "tools", "restriction", "workflow"],
    "additionalProperties": False,
}


def title(name: str) -> str:
    return name.replace("_", " ")


async def plan_ecosystem(lm: LM, persona: SynthPersona, seed: int) -> StageOutcome:
    calls: list[SimCall] = []
    prompt = load_prompt("synth_ecosystem")

    def check(value: dict[str, Any]) -> str | None:
        names = [tool["name"] for tool in value["tools"]]
        listed = ", ".join(names)
        if len(set(names)) != len(names):
            repeated = sorted({name for name in names if names.count(name) > 1})
            return prompt.text("duplicate_names_complaint", names=", ".join(repeated))
        if value["restriction"]["tool"] not in names:
            tool = value["restriction"]["tool"]
            return prompt.text("unknown_restriction_complaint", tool=tool, names=listed)
        used = {step["tool"] for step in value["workflow"] if step["tool"] is not None}
        if unknown := sorted(used - set(names)):
            return prompt.text(
                "unknown_step_tool_complaint", tools=", ".join(unknown), names=listed
            )
        if unused := [name for name in names if name not in used]:
            return prompt.text("unused_tools_complaint", tools=", ".join(unused))
        return None

    try:
        value = await ask_json(
            lm,
            SimulatorContext(seed, calls.append),
            role="taskgen",
            prompt=prompt,
            messages=prompt.render(persona=persona.description),
            schema=PLAN_SCHEMA,
            seed_labels=("synth", "ecosystem"),
            check=check,
            max_tokens=1800,
        )
    except SimulatorError as error:
        return StageOutcome.dropped("simulator_failed", str(error), calls)
    return StageOutcome(Plan.model_validate({"persona": persona, **value}), calls)
