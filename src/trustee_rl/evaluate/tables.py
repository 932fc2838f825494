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
    from rich.console import Console
    from rich.table import Table

    view = Table(title="comparison")
    view.add_column("benchmark")
    view.add_column("metric")
    for model in table["models"]:
        view.add_column(model, justify="right")
    for row in table["rows"]:
        view.add_row(
            row["benchmark"],
            row["metric"],
            *(format_score(row["metric"], value) for value in row["values"]),
        )
    Console().print(view)
