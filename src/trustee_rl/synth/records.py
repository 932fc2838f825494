"""What the synthesis stages pass along: personas, the teacher's plan, the checked tool set, the
underspecified request and the solving attempts, each a typed record stored as one stage result
(the rubric stage's result is the finished `Task`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from trustee_rl.schema import Episode, Persona, Record, SimCall, Usage

SHIPPED_PERSONAS = "personas.jsonl"


class SynthPersona(Record):
    """Who the task is for: `description` seeds the teacher, `expertise` sets the user's voice."""

    id: str
    description: str
    expertise: Persona = "beginner"


class ToolSpec(Record):
    """A tool as the teacher wrote it; its schemas are checked in the tool-check stage."""

    name: str
    description: str
    parameters: dict[str, Any]
    returns: dict[str, Any]


class Restriction(Record):
    tool: str
    forbidden_use: str

    @property
    def rule(self) -> str:
        return f"Do not use {self.tool} to {self.forbidden_use.rstrip('.')}."


class WorkflowStep(Record):
    action: str
    tool: str | None


class Plan(Record):
    """The ecosystem stage's result: a task with its own tools, one restriction and a workflow."""

    persona: SynthPersona
    domain: str
    description: str
    goal: str
    tools: list[ToolSpec]
    restriction: Restriction
    workflow: list[WorkflowStep]


ToolDropReason = Literal["tool_self_doable", "not_text_simulatable"]


class DroppedTool(Record):
    """A tool the tool check took out: `why` is also the task's drop reason when its loss breaks
    the task."""

    why: ToolDropReason
    detail: str


class Toolset(Record):
    """The tool-check stage's result: every schema valid, distractors added, tools the agent could
    do itself taken out (their workflow steps left to the agent), binary results described in
    text (`described`: `tool.field` paths)."""

    tools: list[ToolSpec]
    distractors: list[str]
    repaired: list[str]
    dropped: dict[str, DroppedTool]
    described: list[str]
    workflow: list[WorkflowStep]


class Request(Record):
    """The underspecify stage's result: what the user first says, and what only the user knows."""

    request: str
    private_facts: dict[str, str]


class Attempts(Record):
    """The solve stage's result: the episodes the simulator played as the agent."""

    episodes: list[Episode]


@dataclass
class StageOutcome:
    """One item's result at one stage: a value when kept, else why it was dropped (`drop` is a
    short reason code the funnel counts by, `detail` the specifics)."""

    value: Record | None
    calls: list[SimCall] = field(default_factory=list)
    drop: str | None = None
    detail: str = ""
    # Tokens spent outside simulator calls: the simulator playing the agent.
    agent_usage: Usage = field(default_factory=Usage)

    @classmethod
    def dropped(cls, drop: str, detail: str, calls: list[SimCall]) -> StageOutcome:
        return cls(value=None, calls=calls, drop=drop, detail=detail)

    @property
    def usage(self) -> Usage:
        total = self.agent_usage
        for call in self.calls:
            total = total + call.usage
        return total


def load_personas(path: Path | None) -> list[SynthPersona]:
    """The personas of a JSONL file (one object a line), or the shipped set when `path` is None."""
    where = str(path) if path else "the shipped persona set"
    try:
        text = (
            path.read_text(encoding="utf-8")
            if path
            else resources.files(__package__).joinpath(SHIPPED_PERSONAS).read_text("utf-8")
        )
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"personas {where}: cannot read it ({error})") from error
    personas = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            personas.append(SynthPersona.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValidationError) as error:
            problem = " ".join(str(error).split())[:160]
            raise ValueError(f"personas {where}, line {number}: {problem}") from error
    if not personas:
        raise ValueError(f"personas {where}: no persona in it")
    return personas
