"""The first two stages: a persona becomes a plan with its own tools (ecosystem), and the plan's
tools are checked, repaired once or refused, and joined by distractors (tool check)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from trustee_rl.lm.base import LM
from trustee_rl.schema import SimCall, Tool
from trustee_rl.sim.prompts import load_prompt
from trustee_rl.sim.structured import SimulatorContext, SimulatorError, ask_json
from trustee_rl.synth.records import Plan, StageOutcome, SynthPersona, Toolset, ToolSpec

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


def _tools_schema(key: str, low: int, high: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            key: {"type": "array", "minItems": low, "maxItems": high, "items": TOOL_SPEC_SCHEMA}
        },
        "required": [key],
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


def schema_problem(spec: ToolSpec) -> str | None:
    """Why `spec` is not a usable tool (its schemas are not valid JSON Schema 2020-12, its
    arguments are not an object, its result is not an object the tool simulator can fill)."""
    try:
        Tool(
            name=spec.name,
            description=spec.description,
            parameters=spec.parameters,
            returns=spec.returns,
        )
    except ValidationError as error:
        return " ".join(str(error.errors()[0]["msg"]).removeprefix("Value error, ").split())
    if spec.returns.get("type") != "object":
        return "returns must be a JSON schema with type 'object'"
    return None


async def check_tools(lm: LM, plan: Plan, seed: int) -> StageOutcome:
    """Distractors added, then every schema validated; invalid ones get one repair request with
    their errors, and a task with a schema still invalid after it is dropped."""
    calls: list[SimCall] = []
    context = SimulatorContext(seed, calls.append)
    try:
        distractors = await _distractors(lm, plan, context)
    except SimulatorError as error:
        return StageOutcome.dropped("simulator_failed", f"distractors: {error}", calls)
    tools = [*plan.tools, *distractors]
    problems = {spec.name: problem for spec in tools if (problem := schema_problem(spec))}
    repaired: list[str] = []
    if problems:
        try:
            fixed = {spec.name: spec for spec in await _repair(lm, plan, tools, problems, context)}
        except SimulatorError as error:
            detail = "; ".join(f"{name}: {problem}" for name, problem in problems.items())
            return StageOutcome.dropped("invalid_schema", f"{detail} (repair: {error})", calls)
        tools = [fixed.get(spec.name, spec) for spec in tools]
        repaired = sorted(problems)
        still = {spec.name: problem for spec in tools if (problem := schema_problem(spec))}
        if still:
            detail = "; ".join(f"{name}: {problem}" for name, problem in still.items())
            return StageOutcome.dropped("invalid_schema", f"after repair: {detail}", calls)
    names = [spec.name for spec in distractors]
    return StageOutcome(Toolset(tools=tools, distractors=names, repaired=repaired), calls)


async def _distractors(lm: LM, plan: Plan, context: SimulatorContext) -> list[ToolSpec]:
    prompt = load_prompt("synth_distractors")
    taken = {tool.name for tool in plan.tools}

    def check(value: dict[str, Any]) -> str | None:
        names = [tool["name"] for tool in value["distractors"]]
        clashes = sorted(taken.intersection(names) | {n for n in names if names.count(n) > 1})
        return prompt.text("names_taken_complaint", names=", ".join(clashes)) if clashes else None

    value = await ask_json(
        lm,
        context,
        role="taskgen",
        prompt=prompt,
        messages=prompt.render(
            domain_title=title(plan.domain),
            description=plan.description,
            names=", ".join(sorted(taken)),
            goal=plan.goal,
        ),
        schema=_tools_schema("distractors", 1, 2),
        seed_labels=("synth", "distractors"),
        check=check,
        max_tokens=900,
    )
    return [ToolSpec.model_validate(tool) for tool in value["distractors"]]


async def _repair(
    lm: LM, plan: Plan, tools: list[ToolSpec], problems: dict[str, str], context: SimulatorContext
) -> list[ToolSpec]:
    prompt = load_prompt("synth_repair")
    broken = [spec for spec in tools if spec.name in problems]
    listing = "\n".join(
        f"- {spec.model_dump_json()}\n  error: {problems[spec.name]}" for spec in broken
    )

    def check(value: dict[str, Any]) -> str | None:
        names = sorted(tool["name"] for tool in value["tools"])
        if names != sorted(problems):
            return prompt.text("names_complaint", names=", ".join(sorted(problems)))
        return None

    value = await ask_json(
        lm,
        context,
        role="taskgen",
        prompt=prompt,
        messages=prompt.render(domain_title=title(plan.domain), problems=listing),
        schema=_tools_schema("tools", len(broken), len(broken)),
        seed_labels=("synth", "repair"),
        check=check,
        retries=1,  # one repair, fed the errors: a schema still broken after it drops the task
        max_tokens=900,
    )
    return [ToolSpec.model_validate(tool) for tool in value["tools"]]
