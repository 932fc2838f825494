"""Simulator calls that must return JSON: validate, retry with the error fed back, record every try.

An output that never validates raises SimulatorError: it is never turned into a default value."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonschema

from trustee_rl.lm.base import LM, LMError, LMUnavailable
from trustee_rl.schema import SimCall, SimRole
from trustee_rl.seeding import derive_seed
from trustee_rl.sim.prompts import PromptTemplate, load_prompt

Check = Callable[[Any], str | None]  # returns a complaint, or None when the value is acceptable


RETRY_HEAT = 0.2
# Complaints and the retry request: sent to the LM as it retries, whatever the simulator.
_REJECTED = load_prompt("rejected_output")


class SimulatorError(RuntimeError):
    """A simulator could not produce a valid output after its retries."""


@dataclass(frozen=True)
class SimulatorContext:
    """What one episode (or one task generation) gives each simulator taking part in it.

    `seed` is the one every simulator call's seed derives from; `record` keeps each call (every try)
    with the episode or task it belongs to.
    """

    seed: int
    record: Callable[[SimCall], None]


async def ask_json(
    lm: LM,
    context: SimulatorContext,
    *,
    role: SimRole,
    prompt: PromptTemplate,
    messages: list[dict[str, Any]],
    schema: dict[str, Any],
    seed_labels: tuple[object, ...],
    check: Check | None = None,
    retries: int = 3,
    max_tokens: int = 384,
    temperature: float = 0.7,
) -> Any:
    """The first output valid against `schema` (and passing `check`), seeded by `seed_labels`."""
    seed = derive_seed(context.seed, *seed_labels)
    conversation = list(messages)
    complaint = "no attempt made"
    validator = jsonschema.Draft202012Validator(schema)
    for attempt in range(1, retries + 1):
        record = SimCall(
            role=role,
            model=lm.model,
            prompt_version=prompt.tag,
            messages=conversation,
            json_schema=schema,
            seed=seed + attempt - 1,
            attempts=attempt,
        )
        context.record(record)
        try:
            completion = await lm.complete(
                conversation,
                json_schema=schema,
                max_tokens=max_tokens,
                # A retry that samples like the failed try tends to fail alike.
                temperature=temperature + RETRY_HEAT * (attempt - 1),
                seed=seed + attempt - 1,
            )
        except LMUnavailable:
            raise
        except LMError as error:
            record.error = complaint = f"LM error: {error}"
            continue
        record.output = completion.text
        record.latency_s = completion.latency_s
        record.usage = completion.usage
        value, complaint_or_none = _accept(completion.text, validator, check)
        if complaint_or_none is None:
            return value
        record.error = complaint = complaint_or_none
        conversation = [
            *messages,
            {"role": "assistant", "content": completion.text},
            {"role": "user", "content": _REJECTED.text("retry", complaint=complaint)},
        ]
    raise SimulatorError(f"{role} simulator gave no valid output in {retries} tries: {complaint}")


def repetitive(text: str, span: int = 3, limit: int = 3) -> bool:
    """Whether some run of `span` words occurs `limit` times or more: small models loop."""
    words = text.lower().split()
    counts: dict[tuple[str, ...], int] = {}
    for start in range(len(words) - span + 1):
        key = tuple(words[start : start + span])
        counts[key] = counts.get(key, 0) + 1
        if counts[key] >= limit:
            return True
    return False


def _accept(
    text: str, validator: jsonschema.Draft202012Validator, check: Check | None
) -> tuple[Any, str | None]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        return None, _REJECTED.text("invalid_json", reason=error.msg)
    problem = next(iter(validator.iter_errors(value)), None)
    if problem is not None:
        return None, _REJECTED.text(
            "schema_violation", path=list(problem.absolute_path), problem=problem.message[:200]
        )
    if check is not None and (complaint := check(value)) is not None:
        return None, complaint
    return value, None
