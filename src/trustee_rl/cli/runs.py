"""Commands over a finished or running run: `trustee export`, `trustee report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trustee_rl.cli_common import fail, known_errors, one_line


def export(
    run_dir: Annotated[Path, typer.Argument(help="a run directory")],
    out: Annotated[Path, typer.Option(help="output directory")],
    fmt: Annotated[str, typer.Option("--format", help="jsonl or parquet")] = "jsonl",
) -> None:
    """Export a run's tasks, episodes, verdicts, metrics and curriculum."""
    from trustee_rl.store import RunStore

    if fmt not in ("jsonl", "parquet"):
        fail(f"unknown format {fmt!r}: use jsonl or parquet")
    try:
        with RunStore.open(run_dir, readonly=True) as store:
            paths = store.export(out, fmt)  # type: ignore[arg-type]
    except known_errors() as error:
        fail(one_line(error))
    for path in paths:
        typer.echo(str(path))


def report(
    run_dir: Annotated[Path, typer.Argument(help="a run directory")],
    out: Annotated[Path | None, typer.Option(help="HTML file; default RUN_DIR/report.html")] = None,
) -> None:
    """Write a self-contained HTML report of a run: curves, success rates, criteria, episodes."""
    from trustee_rl.report import write_report

    try:
        path = write_report(run_dir, out)
    except known_errors(OSError) as error:
        fail(one_line(error))
    typer.echo(str(path))
