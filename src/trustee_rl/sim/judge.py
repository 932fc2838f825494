"""The judge: deterministic checks of what actually happened, plus the simulator's rubric judgement.

Criteria are cumulative by strictness (intent -> correct tools -> no hallucination -> no redundancy
-> efficiency). Calling a forbidden or non-existent tool is a violation at every strictness.
A judge that cannot judge returns an unscored verdict: never a default reward.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from trustee_rl.lm.base import LM
from trustee_rl.schema import CriterionResult, Episode, ExpectedCall, Task, ToolCall, Verdict
from trustee_rl.sim.prompts import load_prompt
from trustee_rl.sim.structured import SimulatorContext, SimulatorError, ask_json
from trustee_rl.sim.tools import call_error
from trustee_rl.sim.user import transcript

RULES_VERSION = "rules@1"


class JudgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["lm", "rules"] = "lm"
    # levels: TRUSTEE's {-1, 0, 1}; graded: -1 on a violation, else the mean criterion score in [0, 1].
    reward: Literal["levels", "graded"] = "levels"


def _criterion(name: str, passed: bool, reason: str, score: float | None = None) -> CriterionResult:
    return CriterionResult(
        name=name,
        passed=passed,
        reason=reason,
        source="rule",
        score=float(passed) if score is None else score,
    )


def _arguments_match(expected: Any, actual: Any) -> bool:
    if isinstance(expected, str) and isinstance(actual, str):
        return expected.strip().casefold() == actual.strip().casefold()
    return bool(expected == actual)


def leaf_score(expected: ExpectedCall, call: ToolCall) -> float:
    """Share of the expected argument values this call got right (credit per argument)."""
    if call.name != expected.name:
        return 0.0
    if not expected.arguments:
        return 1.0
    hits = sum(
        _arguments_match(value, call.arguments.get(key))
        for key, value in expected.arguments.items()
    )
    return hits / len(expected.arguments)


def rule_criteria(task: Task, episode: Episode) -> list[CriterionResult]:
    """Every deterministic criterion, whatever the strictness."""
    calls = episode.tool_calls
    called = {call.name for call in calls}
    expected = task.expected_calls
    results: list[CriterionResult] = []

    forbidden = [rule.tool for rule in task.forbidden if rule.tool and rule.tool in called]
    results.append(
        _criterion(
            "no_forbidden",
            not forbidden,
            f"called forbidden {forbidden}" if forbidden else "no forbidden tool called",
        )
    )
    unknown = sorted(
        {call.name for call in calls if not call.parse_error and task.tool(call.name) is None}
    )
    results.append(
        _criterion(
            "known_tools",
            not unknown,
            f"called unknown tools {unknown}" if unknown else "only offered tools called",
        )
    )

    missing = [e.name for e in expected if e.name not in called]
    results.append(
        _criterion(
            "intent_tools",
            not missing,
            f"never called {missing}" if missing else "every needed tool called",
        )
    )

    scores = [max((leaf_score(e, call) for call in calls), default=0.0) for e in expected]
    score = sum(scores) / len(scores) if scores else 1.0
    results.append(
        _criterion(
            "correct_calls", score == 1.0, f"{score:.0%} of expected argument values matched", score
        )
    )

    needed = {e.name for e in expected}
    stray = sorted({call.name for call in calls if call.name not in needed})
    results.append(
        _criterion(
            "only_needed_tools",
            not stray,
            f"also called {stray}" if stray else "only needed tools called",
        )
    )

    problems = [error for call in calls if (error := call_error(call, task))]
    results.append(
        _criterion(
            "valid_calls", not problems, problems[0] if problems else "every call well-formed"
        )
    )

    signatures = [call.signature() for call in calls if not call.parse_error]
    repeated = len(signatures) - len(set(signatures))
    results.append(
        _criterion(
            "no_redundancy",
            repeated == 0,
            f"{repeated} repeated identical calls" if repeated else "no repeated call",
        )
    )

    budget = len(expected) + 1
    results.append(
        _criterion(
            "efficiency", len(calls) <= budget, f"{len(calls)} calls for a budget of {budget}"
        )
    )
    return results


# Which criteria count at each strictness level (cumulative), and which are violations.
LEVEL_CRITERIA = {
    "intent": ("intent_tools", "correct_calls", "intent", "rubric"),
    "correct_tools": ("only_needed_tools",),
    "no_hallucination": ("valid_calls", "grounded"),
    "no_redundancy": ("no_redundancy",),
    "efficiency": ("efficiency",),
}
VIOLATIONS = ("no_forbidden", "known_tools")


class Judge:
    def __init__(self, lm: LM | None, config: JudgeConfig | None = None) -> None:
        self.config = config or JudgeConfig()
        if self.config.mode == "lm" and lm is None:
            raise ValueError("an LM judge needs an LM")
        self.lm = lm
        self.prompt = load_prompt("judge")

    @property
    def model(self) -> str:
        return self.lm.model if self.lm and self.config.mode == "lm" else "rules"

    @property
    def prompt_version(self) -> str:
        return self.prompt.tag if self.config.mode == "lm" else RULES_VERSION

    async def judge(self, task: Task, episode: Episode, context: SimulatorContext) -> Verdict:
        """The episode's verdict; an LM judge's calls go with the episode's other simulator calls."""
        criteria = rule_criteria(task, episode)
        if self.config.mode == "lm":
            try:
                criteria += await self._lm_criteria(task, episode, context)
            except SimulatorError as error:
                return Verdict.unscored(
                    episode.id, f"judge failed: {error}", self.model, self.prompt_version
                )
        active = self._active(task, criteria)
        violated = [c for c in criteria if c.name in VIOLATIONS and not c.passed]
        return Verdict(
            episode_id=episode.id,
            scored=True,
            reward=self._reward(active, bool(violated)),
            criteria=criteria,
            judge_model=self.model,
            prompt_version=self.prompt_version,
        )

    def _active(self, task: Task, criteria: list[CriterionResult]) -> list[CriterionResult]:
        names = {name for level in task.difficulty.criteria for name in LEVEL_CRITERIA[level]}
        return [c for c in criteria if c.name in names or c.name.startswith("rubric:")]

    def _reward(self, active: list[CriterionResult], violated: bool) -> float:
        if violated:
            return -1.0
        if self.config.reward == "graded":
            return sum(c.score for c in active) / len(active) if active else 1.0
        return 1.0 if all(c.passed for c in active) else 0.0

    async def _lm_criteria(
        self, task: Task, episode: Episode, context: SimulatorContext
    ) -> list[CriterionResult]:
        assert self.lm is not None
        checks = {"intent": self.prompt.text("intent_check", goal=task.goal)}
        checks |= {f"rubric:{item.id}": item.description for item in task.rubric}
        checks["grounded"] = self.prompt.text("grounded_check")
        verdict_schema = {
            "type": "object",
            "properties": {
                "reason": {"type": "string", "maxLength": 150},
                "passed": {"type": "boolean"},
            },
            "required": ["reason", "passed"],
            "additionalProperties": False,
        }
        schema = {
            "type": "object",
            "properties": {name: verdict_schema for name in checks},
            "required": list(checks),
            "additionalProperties": False,
        }
        messages = self.prompt.render(
            goal=task.goal,
            transcript=_full_transcript(episode),
            checks="\n".join(f"- {name}: {text}" for name, text in checks.items()),
        )
        value = await ask_json(
            self.lm,
            context,
            role="judge",
            prompt=self.prompt,
            messages=messages,
            schema=schema,
            seed_labels=("judge",),
            temperature=0.0,
            max_tokens=160 + 80 * len(checks),
        )
        return [
            CriterionResult(
                name=name,
                passed=value[name]["passed"],
                reason=value[name]["reason"],
                source="judge",
                score=float(value[name]["passed"]),
            )
            for name in checks
        ]


def _full_transcript(episode: Episode) -> str:
    """The judge sees everything, tool traffic included."""
    lines = []
    for message in episode.messages:
        if message.role == "system":
            continue
        if message.role == "tool":
            lines.append(f"Tool result ({message.name}): {message.content}")
            continue
        if message.content:
            lines.append(f"{message.role.title()}: {message.content}")
        for call in message.tool_calls:
            lines.append(
                f"Assistant calls {call.name}({json.dumps(call.arguments, sort_keys=True)})"
            )
    return "\n".join(lines) or transcript(episode.messages)
