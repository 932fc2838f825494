"""Adaptive curriculum (TRUSTEE): a scalar difficulty D in [1, 100] moved by the batch mean reward.

D bounds seven task aspects. Each aspect takes its hardest value that D allows, or, with
probability epsilon, a value drawn at random between the easiest and that bound (for diversity).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from trustee_rl.schema import STRICTNESS_LEVELS, Difficulty

D_MIN, D_MAX = 1.0, 100.0

# Ordered easiest -> hardest.
SPECIFICITY = ("detailed", "brief", "generic")
PERSONAS = ("expert", "beginner", "novice")
AMBIGUITY = ("clear", "somewhat", "highly")
INTEGER_RANGES = {"num_tools": (1, 10), "num_calls": (1, 3), "num_turns": (1, 2)}
ORDINAL_ASPECTS: dict[str, tuple[str, ...]] = {
    "prompt_specificity": SPECIFICITY,
    "persona": PERSONAS,
    "ambiguity": AMBIGUITY,
}
ASPECTS = (*INTEGER_RANGES, *ORDINAL_ASPECTS, "strictness")


class CurriculumConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    initial_level: float = Field(default=10.0, ge=D_MIN, le=D_MAX)
    step: float = Field(default=3.0, gt=0, description="delta: how far D moves per update")
    low: float = Field(default=0.0, description="eta_low: D falls when the mean reward is below it")
    high: float = Field(
        default=0.5, description="eta_high: D rises when the mean reward is above it"
    )
    epsilon: float = Field(default=0.5, ge=0, le=1, description="chance to randomise each aspect")
    mode: Literal["adaptive", "fixed"] = "adaptive"
    unanswerable_share: float = Field(
        default=0.15,
        ge=0,
        le=1,
        description="share of tasks no offered tool fits, where declining is right (without them "
        "an agent learns to call something whatever it is asked)",
    )


class AspectStats(BaseModel):
    model_config = ConfigDict(extra="forbid")

    episodes: int = 0
    reward_sum: float = 0.0
    successes: int = 0

    @property
    def mean_reward(self) -> float | None:
        return self.reward_sum / self.episodes if self.episodes else None


class CurriculumState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    level: float
    updates: int = 0
    history: list[float] = Field(default_factory=list)
    # aspect -> value (as text) -> stats
    aspect_stats: dict[str, dict[str, AspectStats]] = Field(default_factory=dict)


def _bound(level: float, size: int) -> int:
    """Index of the hardest of `size` ordered values that level D allows."""
    fraction = (level - D_MIN) / (D_MAX - D_MIN)
    return min(size - 1, round(fraction * (size - 1)))


class Curriculum:
    def __init__(self, config: CurriculumConfig, state: CurriculumState | None = None) -> None:
        self.config = config
        self.state = state or CurriculumState(level=config.initial_level)

    @property
    def level(self) -> float:
        return self.state.level

    def sample(self, rng: random.Random) -> Difficulty:
        """Task aspects for the current D."""
        level = self.state.level
        values: dict[str, Any] = {}
        for name, (low, high) in INTEGER_RANGES.items():
            values[name] = low + self._pick(rng, _bound(level, high - low + 1))
        for name, ordered in ORDINAL_ASPECTS.items():
            values[name] = ordered[self._pick(rng, _bound(level, len(ordered)))]
        values["strictness"] = 1 + self._pick(rng, _bound(level, len(STRICTNESS_LEVELS)))
        # Every expected call needs its tool on offer.
        values["num_tools"] = max(values["num_tools"], values["num_calls"])
        values["answerable"] = rng.random() >= self.config.unanswerable_share
        return Difficulty(level=level, **values)

    def _pick(self, rng: random.Random, bound: int) -> int:
        # Always consume the same random numbers, so the sequence never depends on the branch.
        explore, draw = rng.random(), rng.randint(0, bound)
        return draw if explore < self.config.epsilon else bound

    def record(self, difficulty: Difficulty, reward: float, success: bool) -> None:
        """Per-aspect statistics for one scored episode."""
        for aspect in ASPECTS:
            value = str(getattr(difficulty, aspect))
            stats = self.state.aspect_stats.setdefault(aspect, {}).setdefault(value, AspectStats())
            stats.episodes += 1
            stats.reward_sum += reward
            stats.successes += int(success)

    def update(self, rewards: Sequence[float]) -> float:
        """Move D from a batch's scored rewards; returns the new D."""
        self.state.updates += 1
        if self.config.mode == "adaptive" and rewards:
            mean = sum(rewards) / len(rewards)
            if mean > self.config.high:
                self.state.level = min(D_MAX, self.state.level + self.config.step)
            elif mean < self.config.low:
                self.state.level = max(D_MIN, self.state.level - self.config.step)
        self.state.history.append(self.state.level)
        return self.state.level
