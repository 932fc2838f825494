"""The data model: every record trustee-rl produces or consumes, as pydantic v2 models.

Everything here round-trips through JSON (`model_dump_json` / `model_validate_json`) so the run
store, exports and replays all see the same objects.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, field_validator

Role = Literal["system", "user", "assistant", "tool"]
SimRole = Literal["taskgen", "user", "tool", "judge", "policy", "demonstration"]
PromptSpecificity = Literal["detailed", "brief", "generic"]
Persona = Literal["expert", "beginner", "novice"]
Ambiguity = Literal["clear", "somewhat", "highly"]
# Cumulative judging levels: level k checks every criterion of levels 1..k.
STRICTNESS_LEVELS: tuple[str, ...] = (
    "intent",
    "correct_tools",
    "no_hallucination",
    "no_redundancy",
    "efficiency",
)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


class Record(BaseModel):
    """Base for every stored record: strict about unknown fields so typos fail loudly."""

    model_config = ConfigDict(extra="forbid")


class InvalidToolSchema(ValueError):
    """A tool's parameter or return schema is not a usable JSON schema."""


class Tool(Record):
    """One callable function, in OpenAI function-calling terms."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")
    description: str
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    # What a call returns; lets the tool simulator answer in a fixed shape (SynthAgent's output schema).
    returns: dict[str, Any] | None = None

    @field_validator("parameters")
    @classmethod
    def _parameters_is_object_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_schema(value, "parameters")
        if value.get("type") != "object":
            raise InvalidToolSchema("parameters must be a JSON schema with type 'object'")
        required = value.get("required", [])
        properties = value.get("properties", {})
        missing = [name for name in required if name not in properties]
        if missing:
            raise InvalidToolSchema(f"required names without a property: {missing}")
        return value

    @field_validator("returns")
    @classmethod
    def _returns_is_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            _check_schema(value, "returns")
        return value

    def to_openai(self) -> dict[str, Any]:
        """The spec an agent sees. `examples` are for the task generator, not the agent: they would
        hint at answers and lengthen every prompt."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": _without_examples(self.parameters),
            },
        }

    @classmethod
    def from_openai(cls, spec: dict[str, Any]) -> Tool:
        function = spec.get("function", spec)
        return cls(
            name=function["name"],
            description=function.get("description", ""),
            parameters=function.get("parameters", {"type": "object", "properties": {}}),
            returns=function.get("returns"),
        )


def _without_examples(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {key: _without_examples(value) for key, value in schema.items() if key != "examples"}
    if isinstance(schema, list):
        return [_without_examples(item) for item in schema]
    return schema


# Built once: constructing the meta-schema validator dominates checking a schema.
_META_VALIDATOR = jsonschema.Draft202012Validator(jsonschema.Draft202012Validator.META_SCHEMA)


def _check_schema(schema: dict[str, Any], where: str) -> None:
    error = jsonschema.exceptions.best_match(_META_VALIDATOR.iter_errors(schema))
    if error is not None:
        raise InvalidToolSchema(f"{where}: {error.message}")


class ToolCall(Record):
    """A call the policy made. `parse_error` is set when its text could not be read as a call."""

    id: str = Field(default_factory=lambda: new_id("call"))
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    parse_error: str | None = None

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": json.dumps(self.arguments)},
        }

    def signature(self) -> str:
        """Canonical text of (name, arguments): identical calls share it."""
        return json.dumps([self.name, self.arguments], sort_keys=True, separators=(",", ":"))


class Usage(Record):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )


class Message(Record):
    """One chat message in OpenAI format, plus what it cost to produce."""

    role: Role
    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    latency_s: float = 0.0
    usage: Usage = Field(default_factory=Usage)

    def to_openai(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [call.to_openai() for call in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        if self.name is not None and self.role == "tool":
            message["name"] = self.name
        return message


class Difficulty(Record):
    """The seven curriculum aspects (TRUSTEE), derived from the scalar level D in [1, 100]."""

    level: float = Field(ge=1, le=100)
    num_tools: int = Field(ge=1, le=10)
    num_calls: int = Field(ge=1, le=3)
    num_turns: int = Field(ge=1, le=2)
    prompt_specificity: PromptSpecificity
    persona: Persona
    ambiguity: Ambiguity
    strictness: int = Field(ge=1, le=len(STRICTNESS_LEVELS))
    answerable: bool = Field(
        default=True,
        description="False: no offered tool fits the request; the right reply declines",
    )

    @property
    def max_policy_turns(self) -> int:
        """Policy replies allowed: each call and each user exchange, with room for one slip each."""
        return 2 * (self.num_calls + self.num_turns) + 2

    @property
    def criteria(self) -> tuple[str, ...]:
        return STRICTNESS_LEVELS[: self.strictness]


class ExpectedCall(Record):
    """A call a good agent makes. `arguments` lists the values that must match exactly."""

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ForbiddenRule(Record):
    """A rule the agent must not break. With `tool` set, any call to that tool breaks it."""

    description: str
    tool: str | None = None


class RubricItem(Record):
    id: str
    description: str


class Provenance(Record):
    simulator_model: str
    prompt_versions: dict[str, str] = Field(default_factory=dict)
    source: Literal["catalog", "invented", "file", "synthesized"] = "catalog"


class Task(Record):
    id: str
    domain: str
    tools: list[Tool]
    distractors: list[str] = Field(default_factory=list)
    system_prompt: str
    persona: Persona
    initial_message: str
    private_facts: dict[str, str] = Field(default_factory=dict)
    goal: str
    expected_calls: list[ExpectedCall]
    forbidden: list[ForbiddenRule] = Field(default_factory=list)
    rubric: list[RubricItem] = Field(default_factory=list)
    difficulty: Difficulty
    seed: int
    provenance: Provenance

    def tool(self, name: str) -> Tool | None:
        return next((tool for tool in self.tools if tool.name == name), None)


class SimCall(Record):
    """One simulator (or policy) LM call, logged with everything needed to replay it."""

    role: SimRole
    model: str
    prompt_version: str
    messages: list[dict[str, Any]]
    json_schema: dict[str, Any] | None = None
    seed: int | None = None
    output: str | None = None
    error: str | None = None
    attempts: int = 1
    latency_s: float = 0.0
    usage: Usage = Field(default_factory=Usage)


EpisodeStatus = Literal["running", "done", "failed"]


class Episode(Record):
    id: str
    task_id: str
    index: int
    seed: int
    policy_model: str
    messages: list[Message] = Field(default_factory=list)
    sim_calls: list[SimCall] = Field(default_factory=list)
    status: EpisodeStatus = "running"
    end_reason: str | None = None
    wall_s: float = 0.0

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [call for message in self.messages for call in message.tool_calls]

    @property
    def usage(self) -> Usage:
        total = Usage()
        for call in self.sim_calls:
            total = total + call.usage
        for message in self.messages:
            if message.role == "assistant":
                total = total + message.usage
        return total


class CriterionResult(Record):
    name: str
    passed: bool
    reason: str
    source: Literal["rule", "judge"]
    score: float = Field(ge=0, le=1, description="partial credit; 1.0 or 0.0 for plain pass/fail")


class Verdict(Record):
    """The judgement of one episode. `reward` is None exactly when the episode is unscored."""

    episode_id: str
    scored: bool
    reward: float | None = None
    criteria: list[CriterionResult] = Field(default_factory=list)
    unscored_reason: str | None = None
    judge_model: str
    prompt_version: str

    @property
    def succeeded(self) -> bool:
        """The one definition of success everywhere: judged, and given the top reward."""
        return self.scored and self.reward is not None and self.reward >= 1.0

    @classmethod
    def unscored(
        cls, episode_id: str, reason: str, judge_model: str, prompt_version: str
    ) -> Verdict:
        return cls(
            episode_id=episode_id,
            scored=False,
            unscored_reason=reason,
            judge_model=judge_model,
            prompt_version=prompt_version,
        )


class HeldoutOutcome(Record):
    """One held-out task's first reply, graded as `HeldoutScores` counts it."""

    task_id: str
    any_call: bool
    valid_call: bool
    right_tool: bool
    argument_accuracy: float
    # Why the first call is not valid ("no call", or the executor's error); None when it is.
    call_problem: str | None = None


class HeldoutScores(Record):
    """A policy's first replies to the held-out tasks, graded by rules alone."""

    tasks: int
    any_call: float = Field(description="replies that attempt at least one call")
    valid_call: float = Field(
        description="replies whose calls all parse, name offered tools, fit their schemas"
    )
    right_tool: float = Field(
        description="replies whose first call names an expected tool, or that call nothing "
        "where no offered tool fits"
    )
    argument_accuracy: float = Field(description="mean share of expected argument values got right")
    # Kept so two stages can be tested against each other on the same tasks; empty in records
    # written before they were kept, which still load.
    per_task: list[HeldoutOutcome] = Field(default_factory=list)


StageName = Literal["base", "warm_start", "grpo", "control"]


class StageRecord(Record):
    """One finished training stage: the held-out scores of the policy it left, and what it did."""

    name: StageName
    scores: HeldoutScores | None = None
    training: dict[str, float] = Field(default_factory=dict)
    wall_s: float = 0.0
