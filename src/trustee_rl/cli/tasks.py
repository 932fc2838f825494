"""`trustee tasks`: bring tools from elsewhere into the catalog that tasks are generated from,
synthesize task sets with their own tools (SynthAgent-style), and export task sets."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from trustee_rl.cli_common import fail, known_errors, local_runtime, one_line, use_api_key_file

if TYPE_CHECKING:
    from trustee_rl.synth.pipeline import Funnel, SynthConfig

tasks_app = typer.Typer(
    help="Import tools into the catalog; synthesize and export task sets.", no_args_is_help=True
)


@tasks_app.command("import")
def import_tools(
    source: Annotated[
        Path,
        typer.Argument(
            help="an OpenAPI 3 document (YAML or JSON), an MCP tools/list response, or OpenAI "
            "function schemas (JSON or JSON Lines)"
        ),
    ],
    out: Annotated[Path, typer.Option(help="the catalog file to write (for --catalog)")],
    domain: Annotated[
        str | None, typer.Option(help="the domain's name (default: from the API title or file)")
    ] = None,
    force: Annotated[bool, typer.Option(help="replace --out if it exists")] = False,
) -> None:
    """Import tools as one catalog domain, one tool per operation or function."""
    from trustee_rl.sim.catalog import domain_document, import_domain

    if out.exists() and not force:
        fail(f"{out} exists; pass --force to replace it")
    try:
        imported, notes = import_domain(source, domain)
        _write_atomically(out, json.dumps(domain_document(imported), indent=2) + "\n")
    except known_errors(OSError) as error:
        fail(one_line(error))
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    tools = f"{len(imported.tools)} tool" + ("s" if len(imported.tools) != 1 else "")
    typer.echo(f"imported {tools} into domain {imported.name!r}: {out}")


def _write_atomically(path: Path, text: str) -> None:
    # A crash mid-write must not leave a half catalog where a whole one was.
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


@tasks_app.command("synthesize")
def synthesize(
    n: Annotated[int, typer.Option("--n", min=1, help="candidate tasks to write")],
    out: Annotated[
        Path,
        typer.Option(help="the task file (JSONL) to write; its stage file and funnel go beside it"),
    ],
    simulator: Annotated[
        str, typer.Option(help="'embedded' or the URL of an OpenAI-compatible server")
    ] = "embedded",
    simulator_model: Annotated[
        str | None, typer.Option(help="model name on the simulator server")
    ] = None,
    personas: Annotated[
        Path | None, typer.Option(help="JSONL of personas (default: the shipped set)")
    ] = None,
    seed: Annotated[int, typer.Option(help="the run's one seed")] = 0,
    concurrency: Annotated[int, typer.Option(min=1, help="items in flight per stage")] = 4,
    attempts: Annotated[
        int, typer.Option(min=1, max=8, help="solving attempts per task (the simulator as agent)")
    ] = 2,
    dedup_threshold: Annotated[
        float,
        typer.Option(
            min=0.01, max=1.0, help="word n-gram Jaccard at which requests are duplicates"
        ),
    ] = 0.6,
    hack_path: Annotated[
        bool,
        typer.Option(
            help="also write each kept task's policy-tempting variant (id `<task>_hack`): its "
            "request presses for the use the task's restriction forbids"
        ),
    ] = False,
    api_key_file: Annotated[
        Path | None,
        typer.Option(help="file holding the server's API key [default: $OPENAI_API_KEY]"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the funnel as JSON")] = False,
) -> None:
    """Synthesize tasks: persona -> tools -> vague request -> solving attempts -> rubric.

    A rerun with the same --out resumes: finished work is kept, the rest is done."""
    local_runtime()
    from trustee_rl.synth.pipeline import SynthConfig

    try:
        use_api_key_file(api_key_file)
        config = SynthConfig(
            n=n,
            seed=seed,
            simulator=simulator,
            simulator_model=simulator_model,
            personas=str(personas) if personas else None,
            concurrency=concurrency,
            attempts=attempts,
            dedup_threshold=dedup_threshold,
            hack_path=hack_path,
        )
        funnel = _synthesize(config, out, quiet=as_json)
    except known_errors(OSError) as error:
        fail(one_line(error))
    if as_json:
        typer.echo(json.dumps(funnel.as_dict(), indent=2))
    else:
        _print_funnel(funnel, out)


def _synthesize(config: SynthConfig, out: Path, *, quiet: bool) -> Funnel:
    import asyncio
    import time

    from trustee_rl.lm import open_lm
    from trustee_rl.synth.pipeline import (
        Pipeline,
        SynthResult,
        funnel_file,
        settings_fingerprint,
        stage_file,
    )
    from trustee_rl.synth.records import load_personas
    from trustee_rl.synth.stagestore import StageStore
    from trustee_rl.task_files import write_task_file

    personas = load_personas(Path(config.personas) if config.personas else None)
    store = StageStore(stage_file(out), settings_fingerprint(config, personas))
    lm = open_lm(config.simulator, config.simulator_model, config.http)
    started = time.perf_counter()

    async def run(bars: _StageBars) -> SynthResult:
        try:
            return await Pipeline(config, lm, personas, store, bars).run()
        finally:
            await lm.aclose()

    try:
        with _progress(quiet) as progress:
            result = asyncio.run(run(_StageBars(progress)))
    finally:
        store.close()
    result.funnel.wall_s = time.perf_counter() - started
    write_task_file(out, result.tasks)
    if len(result.tasks) > result.funnel.kept:
        typer.echo(
            f"with {len(result.tasks) - result.funnel.kept} policy-tempting variants (--hack-path)",
            err=True,
        )
    _write_atomically(funnel_file(out), json.dumps(result.funnel.as_dict(), indent=2) + "\n")
    return result.funnel


class _StageBars:
    """A progress bar per stage, one row each, as the stages start."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.rows: dict[str, Any] = {}

    def start(self, stage: str, total: int, completed: int) -> None:
        self.rows[stage] = self.progress.add_task(stage, total=total, completed=completed)

    def advance(self, stage: str) -> None:
        self.progress.update(self.rows[stage], advance=1)


def _progress(quiet: bool) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=quiet,
    )


def _print_funnel(funnel: Funnel, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="synthesis funnel")
    for column in ("stage", "in", "kept", "dropped (by reason)"):
        table.add_column(column)
    for stage in funnel.stages:
        dropped = ", ".join(f"{reason} {count}" for reason, count in sorted(stage.dropped.items()))
        table.add_row(stage.stage, str(stage.entered), str(stage.kept), dropped or "-")
    Console().print(table)
    per_task = funnel.tokens_per_kept_task
    tokens = funnel.usage.prompt_tokens + funnel.usage.completion_tokens
    typer.echo(
        f"kept {funnel.kept} tasks in {out}; simulator tokens {tokens}"
        + (f" ({per_task:.0f} per kept task)" if per_task is not None else "")
        + f"; wall time {funnel.wall_s:.1f} s"
    )


@tasks_app.command("export")
def export(
    source: Annotated[Path, typer.Argument(help="a task file (JSONL), e.g. from synthesize")],
    form: Annotated[
        str, typer.Option("--format", help="jsonl, parquet or hf (a `datasets` directory)")
    ],
    out: Annotated[Path, typer.Option(help="the file (or, for hf, directory) to write")],
    force: Annotated[bool, typer.Option(help="replace --out if it exists")] = False,
) -> None:
    """Export a task set for other tools: JSON Lines, Parquet or a Hugging Face dataset."""
    from trustee_rl.synth.export import FORMATS, export_tasks
    from trustee_rl.task_files import load_task_file

    chosen = next((known for known in FORMATS if known == form), None)
    if chosen is None:
        fail(f"unknown format {form!r}: use one of {', '.join(FORMATS)}")
    if out.exists() and not force:
        fail(f"{out} exists; pass --force to replace it")
    try:
        tasks = load_task_file(source)
        export_tasks(tasks, out, chosen)
    except known_errors(OSError) as error:
        fail(one_line(error))
    typer.echo(f"exported {len(tasks)} tasks as {form}: {out}")
