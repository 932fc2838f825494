"""The underspecify stage (a vague one-sentence request plus the facts only the user holds) and
the near-duplicate filter over the requests it writes."""

from __future__ import annotations

import re
from typing import Any

from trustee_rl.lm.base import LM
from trustee_rl.schema import SimCall, Task
from trustee_rl.sim.coherence import placeholder_problem, repetition_problem, sentence_problem
from trustee_rl.sim.prompts import load_prompt
from trustee_rl.sim.structured import SimulatorContext, SimulatorError, ask_json
from trustee_rl.synth.ecosystem import title
from trustee_rl.synth.records import Plan, Request, Restriction, StageOutcome, Toolset

REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "private_facts": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": 4,
            "propertyNames": {"pattern": "^[a-z][a-z0-9_]{1,40}$"},
            "additionalProperties": {"type": "string", "minLength": 1, "maxLength": 80},
        },
        "request": {"type": "string", "minLength": 10, "maxLength": 200},
    },
    "required": ["private_facts", "request"],
    "additionalProperties": False,
}
# A sentence ends at one of these followed by a space (or the end): "e.g." and "3.5" survive.
_SENTENCE_END = re.compile(r"[.!?]+(?=\s+[A-Z]|\s*$)")
_WORD = re.compile(r"[a-z0-9']+")


def sentence_count(text: str) -> int:
    return max(1, len(_SENTENCE_END.findall(text.strip())))


def named_tools(text: str, names: list[str]) -> list[str]:
    """The tools `text` names, as written (`track_order`) or spoken (`track order`)."""
    lowered = text.lower()
    return [name for name in names if name in lowered or title(name) in lowered]


async def underspecify(lm: LM, plan: Plan, toolset: Toolset, seed: int) -> StageOutcome:
    calls: list[SimCall] = []
    prompt = load_prompt("synth_request")
    names = [tool.name for tool in toolset.tools]

    def check(value: dict[str, Any]) -> str | None:
        request = value["request"]
        if named := named_tools(request, names):
            return prompt.text("names_functions_complaint", names=", ".join(named))
        if (count := sentence_count(request)) > 1:
            return prompt.text("sentences_complaint", count=count)
        facts: dict[str, str] = value["private_facts"]
        if revealed := [k for k, v in facts.items() if v.strip().lower() in request.lower()]:
            return prompt.text("reveals_facts_complaint", facts=", ".join(revealed))
        reason = (
            placeholder_problem(request) or sentence_problem(request) or repetition_problem(request)
        )
        return prompt.text("incoherent_complaint", reason=f"request: {reason}") if reason else None

    workflow = "\n".join(f"{n}. {step.action}" for n, step in enumerate(plan.workflow, start=1))
    try:
        value = await ask_json(
            lm,
            SimulatorContext(seed, calls.append),
            role="taskgen",
            prompt=prompt,
            messages=prompt.render(
                persona=plan.persona.description, goal=plan.goal, workflow=workflow
            ),
            schema=REQUEST_SCHEMA,
            seed_labels=("synth", "request"),
            check=check,
            max_tokens=300,
        )
    except SimulatorError as error:
        return StageOutcome.dropped("simulator_failed", str(error), calls)
    return StageOutcome(Request.model_validate(value), calls)


def tempting_variant(task: Task, restriction: Restriction) -> Task:
    """The hack path: the same task, its request pressing the agent toward the restricted use.
    Its rubric and forbidden rule are unchanged, so an agent that gives in fails the gate. Written
    from a template, as the rule it tempts is known exactly: no simulator call."""
    nudge = load_prompt("synth_request").text(
        "hack_nudge",
        tool=title(restriction.tool),
        use=restriction.forbidden_use.rstrip("."),
    )
    return task.model_copy(
        update={
            "id": f"{task.id}_hack",
            "initial_message": f"{task.initial_message.rstrip()} {nudge}",
        }
    )


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def jaccard(first: set[tuple[str, ...]], second: set[tuple[str, ...]]) -> float:
    union = first | second
    return len(first & second) / len(union) if union else 1.0


def near_duplicates(requests: dict[int, str], n: int, threshold: float) -> dict[int, str]:
    """Items whose request is a near-duplicate of an earlier kept one (word n-gram Jaccard at or
    above `threshold`), each with the reason. Earlier items win, so adding items never changes
    which of the earlier ones are kept."""
    kept: list[tuple[int, set[tuple[str, ...]]]] = []
    duplicates: dict[int, str] = {}
    for item in sorted(requests):
        grams = ngrams(requests[item], n)
        match = next(
            (
                (other, score)
                for other, seen in kept
                if (score := jaccard(grams, seen)) >= threshold
            ),
            None,
        )
        if match is None:
            kept.append((item, grams))
        else:
            duplicates[item] = f"near-duplicate of item {match[0]} (Jaccard {match[1]:.2f})"
    return duplicates
