"""The tool-check stage: the plan's tools are joined by distractors, every schema is validated
(JSON Schema 2020-12; an invalid one gets one repair request, then the task is dropped), and each
tool is judged. A tool the agent could do itself (a pure text or arithmetic transform) is taken
out and its workflow steps left to the agent; binary result fields become text descriptions the
tool simulator can write; a tool that takes binary content is taken out. A task left with fewer
than MIN_TOOLS of its own tools, a restriction on a tool taken out, or a workflow step that needs
binary input is dropped, the reason recorded.

Tools sure to go by their shape alone (`sure_drops`) go before any simulator call; the teacher
judges the rest, one structured verdict per tool.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from trustee_rl.lm.base import LM
from trustee_rl.schema import SimCall, Tool
from trustee_rl.sim.prompts import load_prompt
from trustee_rl.sim.structured import SimulatorContext, SimulatorError, ask_json
from trustee_rl.synth.ecosystem import MIN_TOOLS, TOOL_SPEC_SCHEMA, title
from trustee_rl.synth.records import (
    DroppedTool,
    Plan,
    StageOutcome,
    Toolset,
    ToolSpec,
    WorkflowStep,
)

# A tool named for one of these operations on one of these objects, taking no reference to what
# the service holds, transforms what the agent already has: `count_words`, `translate_text`.
_TRANSFORM_VERBS = frozenset({
    "summarize", "summarise", "translate", "paraphrase", "rephrase", "reword", "rewrite",
    "proofread", "spellcheck", "capitalize", "format", "count", "add", "sum", "subtract",
    "multiply", "divide", "calculate", "compute",
})  # fmt: skip
_TRANSFORM_OBJECTS = frozenset({
    "text", "texts", "message", "messages", "sentence", "sentences", "paragraph", "paragraphs",
    "word", "words", "character", "characters", "string", "strings", "number", "numbers", "sum",
    "difference", "product", "quotient", "average", "percentage",
})  # fmt: skip
# Argument names that point at something the service holds: a tool taking one is judged.
_REFERENCE_SUFFIXES = ("_id", "_ids", "_number", "_code", "_key", "_url", "_path")
_BINARY_FORMATS = frozenset({"binary", "byte"})
_DESCRIPTION_LENGTH = 300
_MAX_BINARY_FIELDS = 8


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


def sure_drops(specs: Iterable[ToolSpec]) -> dict[str, DroppedTool]:
    """The tools that go by their shape alone: a pure transform by name and arguments, or a tool
    whose arguments hold binary content (an agent speaks text)."""
    dropped: dict[str, DroppedTool] = {}
    for spec in specs:
        if binary := binary_fields(spec.parameters):
            detail = f"takes binary content ({', '.join(binary)})"
            dropped[spec.name] = DroppedTool(why="not_text_simulatable", detail=detail)
        elif is_text_transform(spec):
            detail = "a pure text or arithmetic transform by its name: the agent does it itself"
            dropped[spec.name] = DroppedTool(why="tool_self_doable", detail=detail)
    return dropped


def is_text_transform(spec: ToolSpec) -> bool:
    """Named verb-first (`count_words`) or verb-last (`word_count`) for a transform of plain text
    or numbers, with no argument that points at something the service holds."""
    words = spec.name.split("_")
    if words[0] in _TRANSFORM_VERBS:
        objects = words[1:]
    elif words[-1] in _TRANSFORM_VERBS:
        objects = words[:-1]
    else:
        return False
    properties = spec.parameters.get("properties")
    arguments = list(properties) if isinstance(properties, dict) else []
    return (
        bool(objects)
        and all(word in _TRANSFORM_OBJECTS for word in objects)
        and not any(name == "id" or name.endswith(_REFERENCE_SUFFIXES) for name in arguments)
    )


def _is_binary(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    media = str(schema.get("contentMediaType", "text/plain"))
    textual = media.startswith("text/") or media.endswith(("json", "xml"))
    return "contentEncoding" in schema or not textual or schema.get("format") in _BINARY_FORMATS


def binary_fields(schema: Any, field: str = "") -> list[str]:
    """The dotted paths of the fields of `schema` (through properties and array items) whose
    content is marked binary (contentEncoding, contentMediaType, format binary or byte)."""
    if _is_binary(schema):
        return [field or "(whole)"]
    if not isinstance(schema, dict):
        return []
    found = binary_fields(schema.get("items"), field)
    properties = schema.get("properties")
    if isinstance(properties, dict):
        for name, value in properties.items():
            found += binary_fields(value, f"{field}.{name}" if field else name)
    return found


def described_in_text(returns: dict[str, Any], fields: set[str]) -> dict[str, Any]:
    """`returns` with each binary-marked schema, and each top-level field in `fields`, replaced by
    a short text description the tool simulator can write."""
    prompt = load_prompt("synth_toolcheck")

    def text(field: str) -> dict[str, Any]:
        return {
            "type": "string",
            "maxLength": _DESCRIPTION_LENGTH,
            "description": prompt.text("text_description", field=title(field)),
        }

    def rewrite(schema: Any, field: str) -> Any:
        if _is_binary(schema):
            return text(field)
        if not isinstance(schema, dict):
            return schema
        rewritten = dict(schema)
        if "items" in schema:
            rewritten["items"] = rewrite(schema["items"], field)
        if isinstance(schema.get("properties"), dict):
            rewritten["properties"] = {
                name: rewrite(value, name) for name, value in schema["properties"].items()
            }
        return rewritten

    result: dict[str, Any] = rewrite(returns, "result")
    for field in fields:
        result["properties"][field] = text(field)
    return result


def _broken(plan: Plan, dropped: dict[str, DroppedTool]) -> tuple[str, str] | None:
    """Why the task cannot stand without the `dropped` tools (reason, detail), or None."""
    own = [spec.name for spec in plan.tools]
    gone = [name for name in own if name in dropped]
    if len(own) - len(gone) < MIN_TOOLS:
        listed = "; ".join(f"{name}: {dropped[name].detail}" for name in gone)
        left = len(own) - len(gone)
        return dropped[gone[0]].why, f"{left} own tools left, {MIN_TOOLS} needed ({listed})"
    if (tool := plan.restriction.tool) in dropped:
        return dropped[tool].why, f"the restriction is on {tool}: {dropped[tool].detail}"
    for step in plan.workflow:
        if step.tool in dropped and (lost := dropped[step.tool]).why == "not_text_simulatable":
            return lost.why, f"the workflow calls {step.tool}: {lost.detail}"
    return None


async def check_tools(lm: LM, plan: Plan, seed: int) -> StageOutcome:
    calls: list[SimCall] = []
    context = SimulatorContext(seed, calls.append)
    dropped = sure_drops(plan.tools)
    if broken := _broken(plan, dropped):
        return StageOutcome.dropped(*broken, calls)
    try:
        distractors = await _distractors(lm, plan, context)
    except SimulatorError as error:
        return StageOutcome.dropped("simulator_failed", f"distractors: {error}", calls)
    dropped |= sure_drops(distractors)
    tools = [spec for spec in [*plan.tools, *distractors] if spec.name not in dropped]
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
    try:
        judgements = await _judge(lm, plan, tools, context)
    except SimulatorError as error:
        return StageOutcome.dropped("simulator_failed", f"tool judgement: {error}", calls)
    dropped |= {
        name: DroppedTool(why="tool_self_doable", detail=f"the teacher: {reason}")
        for name, (self_doable, _, reason) in judgements.items()
        if self_doable
    }
    checked: list[ToolSpec] = []
    described: list[str] = []
    for spec in tools:
        if spec.name in dropped:
            continue
        named = set(judgements[spec.name][1])
        if fields := sorted(named | set(binary_fields(spec.returns))):
            spec = spec.model_copy(update={"returns": described_in_text(spec.returns, named)})
            if problem := schema_problem(spec):
                detail = f"its result cannot be described in text ({problem})"
                dropped[spec.name] = DroppedTool(why="not_text_simulatable", detail=detail)
                continue
            described += [f"{spec.name}.{field}" for field in fields]
        checked.append(spec)
    if broken := _broken(plan, dropped):
        return StageOutcome.dropped(*broken, calls)
    workflow = [
        WorkflowStep(action=step.action, tool=None) if step.tool in dropped else step
        for step in plan.workflow
    ]
    toolset = Toolset(
        tools=checked,
        distractors=[spec.name for spec in distractors if spec.name not in dropped],
        repaired=repaired,
        dropped=dropped,
        described=described,
        workflow=workflow,
    )
    return StageOutcome(toolset, calls)


def _tools_schema(key: str, low: int, high: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            key: {"type": "array", "minItems": low, "maxItems": high, "items": TOOL_SPEC_SCHEMA}
        },
        "required": [key],
        "additionalProperties": False,
    }


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


Judgement = tuple[bool, list[str], str]  # self-doable, binary result fields, the reason


def _judgement_schema(names: list[str]) -> dict[str, Any]:
    verdict = {
        "type": "object",
        "properties": {
            "name": {"enum": names},
            "reason": {"type": "string", "minLength": 10, "maxLength": 300},
            "self_doable": {"type": "boolean"},
            "binary_results": {
                "type": "array",
                "maxItems": _MAX_BINARY_FIELDS,
                "items": {"type": "string", "maxLength": 60},
            },
        },
        "required": ["name", "reason", "self_doable", "binary_results"],
        "additionalProperties": False,
    }
    judgements = {"type": "array", "minItems": len(names), "maxItems": len(names), "items": verdict}
    return {
        "type": "object",
        "properties": {"judgements": judgements},
        "required": ["judgements"],
        "additionalProperties": False,
    }


async def _judge(
    lm: LM, plan: Plan, tools: list[ToolSpec], context: SimulatorContext
) -> dict[str, Judgement]:
    """The teacher's verdict on each tool, in JSON fields: never read out of free text."""
    prompt = load_prompt("synth_toolcheck")
    names = [spec.name for spec in tools]
    fields = {spec.name: set(spec.returns.get("properties", {})) for spec in tools}

    def check(value: dict[str, Any]) -> str | None:
        if sorted(item["name"] for item in value["judgements"]) != sorted(names):
            return prompt.text("names_complaint", names=", ".join(names))
        for item in value["judgements"]:
            if unknown := sorted(set(item["binary_results"]) - fields[item["name"]]):
                known = ", ".join(sorted(fields[item["name"]])) or "(none)"
                return prompt.text(
                    "unknown_fields_complaint",
                    name=item["name"],
                    fields=", ".join(unknown),
                    known=known,
                )
        return None

    value = await ask_json(
        lm,
        context,
        role="taskgen",
        prompt=prompt,
        messages=prompt.render(
            domain_title=title(plan.domain),
            description=plan.description,
            tools="\n".join(f"- {spec.model_dump_json()}" for spec in tools),
            goal=plan.goal,
        ),
        schema=_judgement_schema(names),
        seed_labels=("synth", "toolcheck"),
        check=check,
        temperature=0.0,
        max_tokens=250 * len(tools),
    )
    return {
        item["name"]: (item["self_doable"], item["binary_results"], item["reason"])
        for item in value["judgements"]
    }
