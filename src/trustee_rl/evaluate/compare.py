"""Several models side by side: every metric any of them has, from their `summary.json` files."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from trustee_rl.evaluate.results import SUMMARY_FILE, read_summary
from trustee_rl.report.charts import PALETTE

BENCHMARK_ORDER = ("sim", "bfcl", "tau2")

# Chart geometry, SVG user units.
LABEL_W, BAR_W, BAR_H, GAP, PAD = 250, 360, 12, 8, 16


def comparison(dirs: list[Path]) -> dict[str, Any]:
    """{"models": [label per dir], "rows": [{"benchmark", "metric", "values": [per model]}]};
    a model without a metric has None there."""
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
            rows.append({"benchmark": benchmark, "metric": metric, "values": values})
    return {"models": models, "dirs": [str(d) for d in dirs], "rows": rows}


def write_chart(table: dict[str, Any], path: Path) -> None:
    """Grouped horizontal bars, one group per metric, one bar per model; rates on a 0-100% axis,
    rewards on a -1..1 axis."""
    models: list[str] = table["models"]
    rows: list[dict[str, Any]] = table["rows"]
    group_h = len(models) * BAR_H + GAP
    legend_h = len(models) * 16 + 8
    height = PAD * 2 + legend_h + len(rows) * group_h + 20
    width = LABEL_W + BAR_W + 70
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
        signed = "reward" in row["metric"]
        for index, value in enumerate(row["values"]):
            if value is None:
                continue
            y = y0 + index * BAR_H
            color = PALETTE[index % len(PALETTE)]
            if signed:  # -1..1, zero in the middle
                middle = LABEL_W + BAR_W / 2
                end = middle + max(-1.0, min(1.0, value)) * BAR_W / 2
                x, w = min(middle, end), abs(end - middle)
                text = f"{value:+.2f}"
            else:
                x, w = LABEL_W, max(0.0, min(1.0, value)) * BAR_W
                text = f"{value:.1%}"
            parts.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{BAR_H - 2}" fill="{color}">'
                f"<title>{escape(models[index])}: {text}</title></rect>"
            )
            parts.append(f'<text x="{LABEL_W + BAR_W + 4}" y="{y + BAR_H - 3}">{text}</text>')
    parts.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
