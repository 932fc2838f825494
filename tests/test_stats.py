"""Intervals and paired tests (trustee_rl.stats), against values worked out by hand or in tables."""

from __future__ import annotations

import pytest

from trustee_rl.stats import (
    Interval,
    bootstrap_interval,
    format_p,
    mcnemar,
    mcnemar_exact_p,
    paired_bootstrap,
    wilson_interval,
)


def test_wilson_interval_matches_known_values() -> None:
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx(Interval(0.0, 0.2775), abs=1e-4)
    assert wilson_interval(0, 10).low == 0.0 and wilson_interval(10, 10).high == 1.0
    assert wilson_interval(10, 10) == pytest.approx(Interval(0.7225, 1.0), abs=1e-4)
    low, high = wilson_interval(10, 29)
    assert (round(100 * low, 1), round(100 * high, 1)) == (19.9, 52.7)
    # 99 % is wider than 95 % around the same rate; a rate times n works as the count.
    wide = wilson_interval(5, 10, confidence=0.99)
    assert wide.low < 0.2366 and wide.high > 0.7634
    assert wilson_interval(0.5 * 10, 10) == wilson_interval(5, 10)


def test_wilson_interval_refuses_what_has_no_interval() -> None:
    with pytest.raises(ValueError, match="at least one trial"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="successes must lie"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 10, confidence=1.0)


def test_exact_mcnemar_is_the_binomial_test_of_the_discordant_pairs() -> None:
    assert mcnemar_exact_p(9, 2) == pytest.approx(0.0654, abs=1e-4)  # 2 * 67 / 2**11
    assert mcnemar_exact_p(2, 9) == mcnemar_exact_p(9, 2)
    assert mcnemar_exact_p(0, 10) == pytest.approx(2 / 1024)
    assert mcnemar_exact_p(5, 5) == 1.0 and mcnemar_exact_p(0, 0) == 1.0
    assert 0.0 < mcnemar_exact_p(3000, 3300) < 0.001  # big counts stay exact, no overflow

    first = [True, True, False, False, True, False]
    second = [True, False, True, True, True, False]
    result = mcnemar(first, second)
    assert (result.n, result.b, result.c) == (6, 1, 2)
    assert result.p == mcnemar_exact_p(1, 2) == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        mcnemar([True], [])


def test_the_paired_bootstrap_is_seeded_and_keeps_pairs_together() -> None:
    first = [0.1 * (i % 7) for i in range(60)]
    second = [value + 0.2 for value in first]  # every item up by exactly 0.2
    result = paired_bootstrap(first, second)
    assert result.n == 60
    assert result.difference == pytest.approx(0.2)
    # Resampling pairs leaves no spread, where resampling each side alone would.
    assert result.interval.low == pytest.approx(0.2) and result.interval.high == pytest.approx(0.2)
    assert result.p == pytest.approx(2 / 10_001)
    assert format_p(result.p) == "p<0.001"

    noisy = [value + (0.3 if i % 2 else -0.25) for i, value in enumerate(first)]
    once, again = paired_bootstrap(first, noisy, seed=3), paired_bootstrap(first, noisy, seed=3)
    assert once == again
    assert once.interval.low < once.difference < once.interval.high
    assert paired_bootstrap(first, first).p == 1.0


def test_the_bootstrap_interval_of_a_mean() -> None:
    assert bootstrap_interval([0.5] * 8) == Interval(0.5, 0.5)
    low, high = bootstrap_interval([float(i) for i in range(1, 6)])
    assert 1.0 < low < 3.0 < high < 5.0
    with pytest.raises(ValueError, match="at least one value"):
        bootstrap_interval([])
    assert format_p(0.0654296875) == "p=0.065" and format_p(1.0) == "p=1"
