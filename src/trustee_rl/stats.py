"""The statistics every reported figure carries: intervals for rates and means, paired tests.

Evaluation sets here are small (tens to a few hundred items), so a rate is shown with its Wilson
score interval and a claim that one model beats another rests on a paired test over the same items:
McNemar's exact test for pass/fail outcomes, a paired bootstrap for graded ones.

Written with `math`, `random` and `statistics` alone: scipy is no dependency of the project, and
these few formulas do not justify one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import NamedTuple

CONFIDENCE = 0.95
RESAMPLES = 10_000
SEED = 0


class Interval(NamedTuple):
    """A confidence interval; a tuple, so it is written to JSON as [low, high]."""

    low: float
    high: float


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, not {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: float, trials: int, confidence: float = CONFIDENCE) -> Interval:
    """Wilson score interval for a proportion of `successes` in `trials`. Unlike the normal
    approximation it stays inside [0, 1] and keeps its coverage near 0 % and 100 % and for small
    `trials`. `successes` may be a rate times `trials` (it need not be a whole number)."""
    if trials <= 0:
        raise ValueError(f"an interval needs at least one trial, not {trials}")
    if not 0.0 <= successes <= trials:
        raise ValueError(f"successes must lie in [0, {trials}], not {successes}")
    z = _z(confidence)
    rate = successes / trials
    z2n = z * z / trials
    centre = (rate + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(rate * (1 - rate) / trials + z2n / (4 * trials))
    # At 0 and n the bound is exactly 0 or 1; the formula leaves float noise there.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return Interval(low, high)


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts: `b` items only the first model
    got right, `c` only the second. Under the null each discordant item is a fair coin, so this is
    the binomial test of min(b, c) in b + c at 1/2. Integer arithmetic keeps it exact for any n."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts cannot be negative: b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / (1 << n))


@dataclass(frozen=True)
class McNemar:
    """A paired comparison of pass/fail outcomes on the same `n` items."""

    n: int
    b: int  # items the first got right and the second wrong
    c: int  # items the second got right and the first wrong
    p: float


def mcnemar(first: Sequence[bool], second: Sequence[bool]) -> McNemar:
    """McNemar's exact test on paired outcomes, item i of `first` against item i of `second`."""
    if len(first) != len(second):
        raise ValueError(f"paired outcomes differ in length: {len(first)} and {len(second)}")
    b = sum(1 for x, y in zip(first, second, strict=True) if x and not y)
    c = sum(1 for x, y in zip(first, second, strict=True) if y and not x)
    return McNemar(len(first), b, c, mcnemar_exact_p(b, c))


def format_p(p: float) -> str:
    """A p-value to two significant figures, floored where resampling stops resolving it."""
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"


def _resampled_means(values: Sequence[float], resamples: int, seed: int) -> list[float]:
    if not values:
        raise ValueError("the bootstrap needs at least one value")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, not {resamples}")
    rng = random.Random(seed)
    n = len(values)
    return sorted(math.fsum(rng.choices(values, k=n)) / n for _ in range(resamples))


def _percentiles(ordered: list[float], confidence: float) -> Interval:
    _z(confidence)  # checks the range
    tail = (1 - confidence) / 2
    last = len(ordered) - 1
    low = ordered[max(0, math.floor(tail * len(ordered)))]
    high = ordered[min(last, math.ceil((1 - tail) * len(ordered)) - 1)]
    return Interval(low, high)


def bootstrap_interval(
    values: Sequence[float],
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Interval:
    """Percentile bootstrap interval for the mean of `values`, for graded per-item scores where
    no closed form fits; the same seed gives the same interval."""
    return _percentiles(_resampled_means(values, resamples, seed), confidence)


@dataclass(frozen=True)
class PairedBootstrap:
    """A paired comparison of graded scores on the same `n` items: second minus first."""

    n: int
    difference: float  # mean of the per-item differences
    interval: Interval  # percentile interval of that mean
    p: float  # two-sided


def paired_bootstrap(
    first: Sequence[float],
    second: Sequence[float],
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> PairedBootstrap:
    """Paired bootstrap of the mean difference, resampling items (both models' scores on an item
    travel together, which keeps the pairing). The p-value is twice the smaller share of resampled
    means on either side of zero, each counted with the observed one, so it is never 0."""
    if len(first) != len(second):
        raise ValueError(f"paired scores differ in length: {len(first)} and {len(second)}")
    differences = [y - x for x, y in zip(first, second, strict=True)]
    means = _resampled_means(differences, resamples, seed)
    below = sum(1 for mean in means if mean <= 0)
    above = sum(1 for mean in means if mean >= 0)
    p = min(1.0, 2 * (min(below, above) + 1) / (resamples + 1))
    return PairedBootstrap(
        len(differences),
        math.fsum(differences) / len(differences),
        _percentiles(means, confidence),
        p,
    )
