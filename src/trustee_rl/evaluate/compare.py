"""Several models side by side: every metric any of them has, from their `summary.json` files,
each with its interval and, for every model after the first, a paired test against the first.

Intervals and tests come from the per-item results each dir's cache holds (evaluate/paired.py):
a pass/fail rate gets its Wilson interval and McNemar's exact test, a graded mean a percentile
bootstrap interval and a paired bootstrap. Tests use only the items both models scored.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from trustee_rl.evaluate.paired import Outcomes, read_outcomes
from trustee_rl.evaluate.results import SUMMARY_FILE, read_summary
from trustee_rl.report.charts import PALETTE
from trustee_rl.stats import (
    CONFIDENCE,
    RESAMPLES,
    SEED,
    bootstrap_interval,
    format_p,
    mcnemar,
    paired_bootstrap,
    wilson_interval,
)

BENCHMARK_ORDER = ("sim", "bfcl", "tau2")
# A figure and the mean of its cached items agree to float noise when they are the same number.
SAME_FIGURE = 1e-9

# Chart geometry, SVG user units.
LABEL_W, BAR_W, BAR_H, GAP, PAD, TEXT_W = 250, 360, 12, 8, 16, 230


def comparison(dirs: list[Path]) -> dict[str, Any]:
    """{"models": [label per dir], "rows": [{"benchmark", "metric", "values", "n", "intervals",
    "tests", "notes"}]}, each list per model; a model without a metric has None there. `n` counts
    the items scored, `intervals` are {"low", "high", "method"}, `tests` pair each model with the
    first (None for the first itself)."""
    if not dirs:
        raise ValueError("name at least one evaluation output dir")
    summaries = []
    for directory in dirs:
        summary = read_summary(directory)
        if not summary:
            raise ValueError(
                f"{directory} has no {SUMMARY_FILE}: run `trustee eval ...` into it first"
            )
        summaries.append(summary)
    models = [summary["model"] for summary in summaries]
    outcomes = [read_outcomes(d, s) for d, s in zip(dirs, summaries, strict=True)]
    benchmarks = sorted(
        {name for summary in summaries for name in summary["benchmarks"]},
        key=lambda name: (BENCHMARK_ORDER.index(name) if name in BENCHMARK_ORDER else 99, name),
    )
    rows = []
    for benchmark in benchmarks:
        metrics: list[str] = []
        for summary in summaries:
            for metric in summary["benchmarks"].get(benchmark, {}).get("scores", {}):
                if metric not in metrics:
                    metrics.append(metric)
        for metric in metrics:
            values = [
                summary["benchmarks"].get(benchmark, {}).get("scores", {}).get(metric)
                for summary in summaries
            ]
            items = [found.get((benchmark, metric)) for found in outcomes]
            rows.append(_row(benchmark, metric, models, values, items))
    return {
        "models": models,
        "dirs": [str(d) for d in dirs],
        "rows": rows,
        "confidence": CONFIDENCE,
        "bootstrap": {"resamples": RESAMPLES, "seed": SEED},
    }


def is_rate(metric: str) -> bool:
    """Every figure is a rate in [0, 1] but rewards, which are means in [-1, 1]."""
    return "reward" not in metric


def _row(
    benchmark: str,
    metric: str,
    models: list[str],
    values: list[float | None],
    items: list[Outcomes | None],
) -> dict[str, Any]:
    notes: list[str] = []
    intervals: list[dict[str, Any] | None] = []
    for model, value, outcomes in zip(models, values, items, strict=True):
        if value is None or outcomes is None:
            intervals.append(None)
            continue
        if abs(outcomes.mean - value) > SAME_FIGURE:
            notes.append(
                f"{model}: {format_value(metric, value)} is not the mean of its"
                f" {len(outcomes.values)} cached items ({format_value(metric, outcomes.mean)}):"
                " a composite of per-category figures, or a cache holding other items;"
                " no interval"
            )
            intervals.append(None)
            continue
        intervals.append(figure_interval(metric, outcomes))
    first = items[0] if values[0] is not None else None
    tests: list[dict[str, Any] | None] = [None]
    for value, outcomes in zip(values[1:], items[1:], strict=True):
        if first is not None and value is not None and outcomes is not None:
            tests.append(paired_test(metric, first, outcomes))
        else:
            tests.append(None)
    return {
        "benchmark": benchmark,
        "metric": metric,
        "values": values,
        "n": [
            None if o is None or v is None else len(o.values)
            for o, v in zip(items, values, strict=True)
        ],
        "intervals": intervals,
        "tests": tests,
        "notes": notes,
    }


def figure_interval(metric: str, outcomes: Outcomes) -> dict[str, Any]:
    """Wilson for a pass/fail rate; otherwise (rewards, tau2's pass^k over several trials) a
    percentile bootstrap of the mean over items."""
    scores = list(outcomes.values.values())
    if is_rate(metric) and outcomes.binary:
        low, high = wilson_interval(sum(scores), len(scores))
        return {"low": low, "high": high, "method": "wilson"}
    low, high = bootstrap_interval(scores)
    return {"low": low, "high": high, "method": "bootstrap"}


def paired_test(metric: str, first: Outcomes, other: Outcomes) -> dict[str, Any]:
    """`other` against `first` on the items both scored; items only one of them scored are left
    out and counted."""
    common = sorted(first.values.keys() & other.values.keys())
    test: dict[str, Any] = {
        "paired": len(common),
        "only_first": len(first.values) - len(common),
        "only_this": len(other.values) - len(common),
    }
    if not common:
        return test | {"test": None, "p": None}
    x = [first.values[item] for item in common]
    y = [other.values[item] for item in common]
    if is_rate(metric) and all(value in (0.0, 1.0) for value in x + y):
        result = mcnemar([v == 1.0 for v in x], [v == 1.0 for v in y])
        return test | {
            "test": "mcnemar",
            "p": result.p,
            "b": result.b,
            "c": result.c,
            "difference": (result.c - result.b) / result.n,
        }
    boot = paired_bootstrap(x, y)
    return test | {
        "test": "paired bootstrap",
        "p": boot.p,
        "difference": boot.difference,
        "interval": list(boot.interval),
    }


def format_value(metric: str, value: float) -> str:
    return f"{value:.1%}" if is_rate(metric) else f"{value:+.3f}"


def write_chart(table: dict[str, Any], path: Path) -> None:
    """Grouped horizontal bars, one group per metric, one bar per model; rates on a 0-100% axis,
    rewards on a -1..1 axis; each bar with its interval as a whisker, and the paired test's p
    beside every model after the first."""
    models: list[str] = table["models"]
    rows: list[dict[str, Any]] = table["rows"]
    group_h = len(models) * BAR_H + GAP
    legend_h = len(models) * 16 + 8
    height = PAD * 2 + legend_h + len(rows) * group_h + 20
    width = LABEL_W + BAR_W + TEXT_W
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    for index, model in enumerate(models):
        y = PAD + index * 16
        color = PALETTE[index % len(PALETTE)]
        parts.append(f'<rect x="{PAD}" y="{y}" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{PAD + 16}" y="{y + 9}">{escape(model)}</text>')
    top = PAD + legend_h
    for row_index, row in enumerate(rows):
        y0 = top + row_index * group_h
        label = f"{row['benchmark']}: {row['metric']}"
        parts.append(
            f'<text x="{LABEL_W - 6}" y="{y0 + len(models) * BAR_H / 2 + 4}" '
            f'text-anchor="end">{escape(label)}</text>'
        )
        for index, value in enumerate(row["values"]):
            if value is not None:
                parts += _bar(row, index, value, y0 + index * BAR_H, models[index])
    parts.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")


def _bar(row: dict[str, Any], index: int, value: float, y: float, model: str) -> list[str]:
    metric = row["metric"]
    color = PALETTE[index % len(PALETTE)]

    def x_of(v: float) -> float:
        if is_rate(metric):
            return LABEL_W + max(0.0, min(1.0, v)) * BAR_W
        return LABEL_W + BAR_W / 2 + max(-1.0, min(1.0, v)) * BAR_W / 2  # zero in the middle

    start = x_of(0.0)
    end = x_of(value)
    text = format_value(metric, value)
    interval = row["intervals"][index]
    if interval is not None:
        text += (
            f" [{format_value(metric, interval['low'])}, {format_value(metric, interval['high'])}]"
        )
    test = row["tests"][index]
    if test is not None and test["p"] is not None:
        text += f" {format_p(test['p'])}"
    parts = [
        f'<rect x="{min(start, end):.1f}" y="{y}" width="{abs(end - start):.1f}" '
        f'height="{BAR_H - 2}" fill="{color}"><title>{escape(model)}: {escape(text)}</title></rect>'
    ]
    if interval is not None:
        low, high, middle = x_of(interval["low"]), x_of(interval["high"]), y + (BAR_H - 2) / 2
        parts.append(
            f'<path d="M{low:.1f} {middle - 3}v6M{low:.1f} {middle}H{high:.1f}'
            f'M{high:.1f} {middle - 3}v6" stroke="#333" fill="none"/>'
        )
    parts.append(f'<text x="{LABEL_W + BAR_W + 4}" y="{y + BAR_H - 3}">{escape(text)}</text>')
    return parts
