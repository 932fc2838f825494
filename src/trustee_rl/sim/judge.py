"""The judge: the rule criteria (sim/rules.py) of what actually happened, plus the simulator's
rubric judgement.

Criteria are cumulative by strictness (intent -> correct tools -> no hallucination -> no redundancy
-> efficiency). A malformed reply, a forbidden or a non-existent tool is a violation (-1) at every
strictness; an episode that needed a call and made none earns 0; the LM's criteria can lower the
reward the rules give, never raise it. A judge that cannot judge returns an unscored verdict:
never a default reward.

The LM judge reads the transcript as quoted data: one line per turn between two delimiter lines,
every text a JSON string (so no text can start a line, close the quote or pose as another turn),
invisible characters decoded or dropped, and the delimiters neutralised wherever a text contains
them. What a text claims is checked by rules first (sim/claims.py), so no wording lifts a reward.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from trustee_rl.lm.base import LM
from trustee_rl.schema import CriterionResult, Episode, Task, Verdict
from trustee_rl.sim.claims import visible_text
from trustee_rl.sim.prompts import load_prompt
from trustee_rl.sim.rules import LEVEL_CRITERIA, RULES_VERSION, VIOLATIONS, rule_criteria
from trustee_rl.sim.structured import SimulatorContext, SimulatorError, ask_json
from trustee_rl.synth.reward import SynthRewardConfig, synth_verdict

# The share of a violator's criterion score it keeps in the graded map: its reward stays in
# [-1, -0.5], below every episode without a violation.
VIOLATION_CREDIT = 0.5
TRANSCRIPT_START = "=== TRANSCRIPT START ==="
TRANSCRIPT_END = "=== TRANSCRIPT END ==="
# Anything in a quoted text that reads like either delimiter.
_DELIMITER = re.compile(r"=+\s*transcript\s+(?:start|end)\s*=+", re.IGNORECASE)
# A quoted text longer than this keeps its head and tail: a judge model's context is small.
MAX_QUOTED_CHARS = 1200


class JudgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["lm", "rules"] = "lm"
    # levels: TRUSTEE's {-1, 0, 1}; graded: the mean criterion score in [0, 1], or in [-1, -0.5]
    # with a violation.
    # synth: SynthAgent's gate(no violation) x mix(subgoals, interaction) over a synthesized
    # task's rubric (synth/reward.py); it needs the LM judge.
    reward: Literal["levels", "graded", "synth"] = "levels"
    synth: SynthRewardConfig = Field(default_factory=SynthRewardConfig)


class Judge:
    def __init__(self, lm: LM | None, config: JudgeConfig | None = None) -> None:
        self.config = config or JudgeConfig()
        if self.config.mode == "lm" and lm is None:
            raise ValueError("an LM judge needs an LM")
        if self.config.reward == "synth" and self.config.mode != "lm":
            raise ValueError(
                "judge.reward=synth needs judge.mode=lm: the simulator judges the rubric"
            )
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
        if self.config.reward == "synth":
            return synth_verdict(
                episode.id,
                criteria,
                self.config.synth,
                judge_model=self.model,
                prompt_version=self.prompt_version,
            )
        violated = any(c.name in VIOLATIONS and not c.passed for c in criteria)
        active = self._active(task, criteria)
        rules_only = self._reward(
            task, episode, [c for c in active if c.source == "rule"], violated
        )
        return Verdict(
            episode_id=episode.id,
            scored=True,
            reward=min(rules_only, self._reward(task, episode, active, violated)),
            criteria=criteria,
            judge_model=self.model,
            prompt_version=self.prompt_version,
        )

    def _active(self, task: Task, criteria: list[CriterionResult]) -> list[CriterionResult]:
        names = {name for level in task.difficulty.criteria for name in LEVEL_CRITERIA[level]}
        return [c for c in criteria if c.name in names or c.name.startswith("rubric:")]

    def _reward(
        self, task: Task, episode: Episode, active: list[CriterionResult], violated: bool
    ) -> float:
        share = sum(c.score for c in active) / len(active) if active else 1.0
        if violated:
            # graded: still below every episode without a violation, but a violator that got the
            # calls right is told apart from one that did not, so a group of violators (a policy
            # that imitates tool output every time, say) still carries a signal.
            return -1.0 + VIOLATION_CREDIT * share if self.config.reward == "graded" else -1.0
        if task.expected_calls and not episode.tool_calls:
            return 0.0  # nothing else an episode does stands in for the call it needed
        if self.config.reward == "graded":
            return share
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
            start=TRANSCRIPT_START,
            end=TRANSCRIPT_END,
            transcript=quoted_transcript(episode),
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


def quoted_transcript(episode: Episode) -> str:
    """Every turn the judge sees, tool traffic included, one line each, texts as JSON."""
    lines = []
    for message in episode.messages:
        if message.role == "system":
            continue
        if message.role == "tool":
            name = _quoted(message.name or "")
            lines.append(f"tool result ({name}): {_quoted_json(message.content or '')}")
            continue
        if message.content:
            lines.append(f"{message.role}: {_quoted(message.content)}")
        for call in message.tool_calls:
            lines.append(
                f"assistant calls {_quoted(call.name)} with {_quoted_json(call.arguments)}"
            )
    return "\n".join(lines)


def _quoted(text: str) -> str:
    """A text as one JSON string, cut in the middle when long."""
    text = _visible(text)
    if len(text) > MAX_QUOTED_CHARS:
        half = MAX_QUOTED_CHARS // 2
        text = f"{text[:half]} [... {len(text) - 2 * half} characters left out ...] {text[-half:]}"
    return json.dumps(text, ensure_ascii=False)


def _quoted_json(value: Any) -> str:
    """Tool arguments or a tool result: JSON on one line when it is JSON, else a quoted text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return _quoted(value)
    text = json.dumps(_visible_values(value), ensure_ascii=False)
    return text if len(text) <= MAX_QUOTED_CHARS else _quoted(text)


def _visible(text: str) -> str:
    return _DELIMITER.sub("[delimiter removed]", visible_text(text))


def _visible_values(value: Any) -> Any:
    if isinstance(value, str):
        return _visible(value)
    if isinstance(value, dict):
        return {_visible(str(key)): _visible_values(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_visible_values(item) for item in value]
    return value
