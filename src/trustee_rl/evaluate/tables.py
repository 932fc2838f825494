"""The terminal tables `trustee eval` prints (rich), one per benchmark and one for compare."""

from __future__ import annotations

from typing import Any


def format_score(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if "reward" in name else f"{value:.1%}"


def print_scores(title: str, scores: dict[str, float]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("score", justify="right")
    for name, value in scores.items():
        table.add_row(name, format_score(name, value))
    Console().print(table)


def print_bfcl(summary: dict[str, Any], label: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"BFCL v4 — {label}")
    for column in ("category", "accuracy", "entries", "wall s"):
        table.add_column(column, justify="left" if column == "category" else "right")
    for category, row in summary["categories"].items():
        table.add_row(
            category, f"{row['accuracy']:.1%}", str(row["entries"]), f"{row['wall_s']:.0f}"
        )
    for name, value in summary["scores"].items():
        if name.endswith("(overall)"):
            table.add_row(f"[bold]{name}[/bold]", f"{value:.1%}", "", "")
    Console().print(table)


def print_comparison(table: dict[str, Any]) -> None:
    """Each model's figure with its interval and item count; beside every model after the first,
    its paired test against the first."""
    from rich.console import Console
    from rich.table import Table

    models: list[str] = table["models"]
    confidence = f"{table['confidence']:.0%}"
    view = Table(
        title="comparison",
        caption=f"In brackets: the {confidence} interval (Wilson for pass/fail rates, percentile"
        f" bootstrap for means, {table['bootstrap']['resamples']:,} resamples, seed"
        f" {table['bootstrap']['seed']}); n: items scored. vs {models[0]}: paired on the items"
        " both scored, McNemar's exact test (+items only this model passed / −items only the"
        " first passed) or a paired bootstrap of the mean difference.",
    )
    view.add_column("benchmark")
    view.add_column("metric")
    view.add_column(models[0], justify="right")
    for model in models[1:]:
        view.add_column(model, justify="right")
        view.add_column(f"vs {models[0]}", justify="right")
    notes: list[str] = []
    for row in table["rows"]:
        metric = row["metric"]
        cells = [
            _figure_cell(metric, value, n, interval)
            for value, n, interval in zip(row["values"], row["n"], row["intervals"], strict=True)
        ]
        line = [row["benchmark"], metric, cells[0]]
        for cell, test in zip(cells[1:], row["tests"][1:], strict=True):
            line += [cell, _test_cell(metric, test)]
        view.add_row(*line)
        notes += [f"{row['benchmark']} {metric}: {note}" for note in row["notes"]]
    console = Console()
    console.print(view)
    for note in notes:
        console.print(f"note: {note}", highlight=False)


def _figure_cell(
    metric: str, value: float | None, n: int | None, interval: dict[str, Any] | None
) -> str:
    if value is None:
        return "-"
    text = format_score(metric, value)
    if interval is not None:
        text += f" [{_bound(metric, interval['low'])}, {_bound(metric, interval['high'])}]"
    if n is not None:
        text += f" n={n}"
    return text


def _bound(metric: str, value: float) -> str:
    return f"{value:+.3f}" if "reward" in metric else f"{100 * value:.1f}"


def _test_cell(metric: str, test: dict[str, Any] | None) -> str:
    from trustee_rl.stats import format_p

    if test is None:
        return "-"
    unpaired = test["only_first"] + test["only_this"]
    left_out = f", {unpaired} unpaired" if unpaired else ""
    if test["test"] is None:
        return f"no item in common{left_out}"
    if test["test"] == "mcnemar":
        return f"{format_p(test['p'])} +{test['c']}/−{test['b']} of {test['paired']}{left_out}"
    low, high = test["interval"]
    if "reward" in metric:
        shift = f"Δ{test['difference']:+.3f} [{low:+.3f}, {high:+.3f}]"
    else:
        shift = f"Δ{100 * test['difference']:+.1f} pts [{100 * low:+.1f}, {100 * high:+.1f}]"
    return f"{format_p(test['p'])} {shift} of {test['paired']}{left_out}"
