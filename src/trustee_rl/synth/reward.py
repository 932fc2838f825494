"""SynthAgent's reward as a judge mode: gate(no forbidden behaviour) x mix(subgoals, interaction).

A synthesized task's rubric items carry their kind in their id (`policy-1`, `subgoal-2`,
`interaction-1`); the LM judge checks each as criterion `rubric:<id>`. The gate closes on any rule
violation (a forbidden tool, an unknown tool, a malformed reply, a claim no call backs) and on any
failed policy item; the mix weighs the passed share of subgoal items against the passed share of
interaction items. A task whose rubric has no subgoal items cannot be scored this way: its verdict
is unscored, never a default reward.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trustee_rl.schema import CriterionResult, RubricItem, Verdict
from trustee_rl.sim.rules import VIOLATIONS

RubricKind = Literal["policy", "subgoal", "interaction"]
RUBRIC_KINDS: tuple[RubricKind, ...] = ("policy", "subgoal", "interaction")


class SynthRewardConfig(BaseModel):
    """The mix's weights: 0.7 / 0.3 as SynthAgent's released code (its paper says 0.5 / 0.5)."""

    model_config = ConfigDict(extra="forbid")

    subgoal_weight: float = Field(default=0.7, ge=0)
    interaction_weight: float = Field(default=0.3, ge=0)

    @model_validator(mode="after")
    def _some_weight(self) -> SynthRewardConfig:
        if self.subgoal_weight + self.interaction_weight <= 0:
            raise ValueError("the synth reward needs a positive subgoal or interaction weight")
        return self


def rubric_items(kind: RubricKind, descriptions: list[str]) -> list[RubricItem]:
    return [
        RubricItem(id=f"{kind}-{number}", description=text)
        for number, text in enumerate(descriptions, start=1)
    ]


def rubric_kind(criterion_name: str) -> RubricKind | None:
    """The kind of a judged rubric criterion (`rubric:subgoal-2` -> subgoal), or None."""
    prefix, _, item = criterion_name.partition(":")
    if prefix != "rubric":
        return None
    return next((kind for kind in RUBRIC_KINDS if item.startswith(f"{kind}-")), None)


def synth_verdict(
    episode_id: str,
    criteria: list[CriterionResult],
    config: SynthRewardConfig,
    *,
    judge_model: str,
    prompt_version: str,
) -> Verdict:
    """The verdict over `criteria` (rules and LM judge together) under SynthAgent's reward."""
    by_kind: dict[RubricKind, list[CriterionResult]] = {kind: [] for kind in RUBRIC_KINDS}
    for result in criteria:
        if (kind := rubric_kind(result.name)) is not None:
            by_kind[kind].append(result)
    if not by_kind["subgoal"]:
        return Verdict.unscored(
            episode_id,
            "the synth reward needs subgoal rubric items (a synthesized task's rubric)",
            judge_model,
            prompt_version,
        )
    violated = any(c.name in VIOLATIONS and not c.passed for c in criteria) or not all(
        c.passed for c in by_kind["policy"]
    )
    shares = {kind: _passed_share(by_kind[kind]) for kind in ("subgoal", "interaction")}
    weights = {"subgoal": config.subgoal_weight, "interaction": config.interaction_weight}
    # A task that needs no interaction is judged on its subgoals alone.
    counted = [kind for kind, share in shares.items() if share is not None and weights[kind] > 0]
    total = sum(weights[kind] for kind in counted)
    if total == 0:
        return Verdict.unscored(
            episode_id,
            "the synth reward weighs only interaction, and the task needs none",
            judge_model,
            prompt_version,
        )
    mix = sum(weights[kind] * (shares[kind] or 0.0) for kind in counted) / total
    return Verdict(
        episode_id=episode_id,
        scored=True,
        reward=0.0 if violated else mix,
        criteria=criteria,
        judge_model=judge_model,
        prompt_version=prompt_version,
    )


def _passed_share(results: list[CriterionResult]) -> float | None:
    return sum(c.passed for c in results) / len(results) if results else None
