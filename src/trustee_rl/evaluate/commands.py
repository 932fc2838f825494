"""`trustee eval`: benchmarks for any checkpoint, and their side-by-side comparison.

Every evaluation writes into one output dir per model: `results.sqlite` (each scored item, so a
re-run resumes) and `summary.json` (the headline figures that `trustee eval compare` reads).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from trustee_rl.cli_common import fail, known_errors, local_runtime, one_line

# tau2's own default (`tau2.config.DEFAULT_MAX_STEPS`), written out because tau2 loads slowly.
TAU2_MAX_STEPS = 200

eval_app = typer.Typer(
    help="Evaluate a model on BFCL v4, a held-out simulated benchmark or tau2-bench; compare models.",
    no_args_is_help=True,
)


@eval_app.callback()
def _settings() -> None:
    local_runtime()


ModelOption = Annotated[
    str,
    typer.Option(
        "--model",
        help="'embedded', a Hugging Face checkpoint dir (such as RUN_DIR/final), or an "
        "http(s):// OpenAI-compatible server URL",
    ),
]
ModelNameOption = Annotated[
    str | None, typer.Option("--model-name", help="model name on the server (URL models)")
]
OutOption = Annotated[
    Path | None,
    typer.Option(help="output dir for this model's results (default: evals/<model label>)"),
]
MaxTokensOption = Annotated[
    int, typer.Option(min=1, help="most tokens the model may write per turn")
]
JsonOption = Annotated[bool, typer.Option("--json", help="print the figures as JSON")]


@contextmanager
def _bar(description: str) -> Iterator[Any]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),  # stdout stays clean for --json
    ) as progress:
        tasks: dict[str, Any] = {}

        def update(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(f"{description} {name}", total=total)
            progress.update(tasks[name], completed=done, total=total)

        yield update


def _open_agent(model: str, model_name: str | None, max_tokens: int) -> Any:
    from trustee_rl.evaluate.agent import open_agent

    try:
        return open_agent(model, model_name, max_new_tokens=max_tokens)
    except known_errors(OSError) as error:
        fail(one_line(error))


def _run_and_show(
    run: Callable[[], Coroutine[Any, Any, dict[str, Any]]],
    as_json: bool,
    show: Callable[[dict[str, Any]], None],
    out: Path,
) -> None:
    """Run an evaluation, then print its figures as JSON or as `show` draws them."""
    try:
        figures = asyncio.run(run())
    except known_errors(OSError) as error:
        fail(one_line(error))
    if as_json:
        typer.echo(json.dumps(figures, indent=2))
    else:
        show(figures)
    typer.echo(f"results: {out}", err=True)


def _default_out(label: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label).strip("_")
    return Path("evals") / safe


def _print_scores(title: str, scores: dict[str, float]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("score", justify="right")
    for name, value in scores.items():
        table.add_row(name, format_score(name, value))
    Console().print(table)


def format_score(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if "reward" in name else f"{value:.1%}"


@eval_app.command()
def bfcl(
    model: ModelOption,
    model_name: ModelNameOption = None,
    categories: Annotated[
        str,
        typer.Option(
            help="comma-separated BFCL categories or groups (non_live, live, multi_turn, all)"
        ),
    ] = "all",
    limit: Annotated[
        int | None, typer.Option(min=1, help="first N entries of each category")
    ] = None,
    out: OutOption = None,
    max_tokens: MaxTokensOption = 256,
    as_json: JsonOption = False,
) -> None:
    """BFCL v4 offline: BFCL's own data, tool conversion and checkers, our policy's rendering."""
    # bfcl_eval itself is imported later, once its project root is set, so look for it here.
    if importlib.util.find_spec("bfcl_eval") is None:
        fail("BFCL needs the evaluation extras: run `bash scripts/setup.sh --eval`")
    from trustee_rl.evaluate import bfcl as bfcl_eval

    try:
        chosen, skipped = bfcl_eval.resolve_categories(categories.split(","))
    except ValueError as error:
        fail(one_line(error))
    for line in skipped:
        typer.echo(line, err=True)
    if not chosen:
        fail("no offline BFCL category left to run")
    agent = _open_agent(model, model_name, max_tokens)
    out = out or _default_out(agent.name)

    async def run() -> dict[str, Any]:
        with _bar("bfcl") as update:
            evaluation = bfcl_eval.Evaluation(agent, out, progress=update)
            try:
                return await evaluation.run(chosen, limit)
            finally:
                await agent.aclose()

    _run_and_show(run, as_json, lambda summary: _print_bfcl(summary, agent.name), out)


def _print_bfcl(summary: dict[str, Any], label: str) -> None:
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


@eval_app.command()
def sim(
    model: ModelOption,
    tasks: Annotated[
        Path,
        typer.Option(
            help="frozen tasks (JSONL), such as RUN_DIR/heldout_tasks.jsonl; written from "
            "--seed/--n first when it does not exist"
        ),
    ],
    model_name: ModelNameOption = None,
    seed: Annotated[int, typer.Option(help="seed for writing new tasks and for the episodes")] = 0,
    n: Annotated[
        int | None, typer.Option("--n", min=1, help="tasks to write when --tasks is new")
    ] = None,
    split_seed: Annotated[
        int,
        typer.Option(help="the training run's seed: its held-out catalog domains are used"),
    ] = 0,
    holdout_fraction: Annotated[
        float, typer.Option(min=0.01, max=0.99, help="the training run's held-out share")
    ] = 0.2,
    level: Annotated[float, typer.Option(min=1, max=100, help="difficulty of new tasks")] = 1.0,
    simulator: Annotated[
        str, typer.Option(help="'embedded' or the URL of an OpenAI-compatible server")
    ] = "embedded",
    simulator_model: Annotated[str | None, typer.Option(help="model name on that server")] = None,
    judge: Annotated[
        str, typer.Option(help="'rules' or 'lm' (rules + simulator rubric)")
    ] = "rules",
    out: OutOption = None,
    max_tokens: MaxTokensOption = 256,
    as_json: JsonOption = False,
) -> None:
    """A held-out simulated benchmark: whole episodes on frozen tasks from unseen catalog domains."""
    from trustee_rl.environment import Environment
    from trustee_rl.evaluate.simbench import evaluate_sim, freeze_tasks, load_tasks, save_tasks
    from trustee_rl.lm import open_lm
    from trustee_rl.lm.cache import CachedLM
    from trustee_rl.sim.catalog import load_catalog
    from trustee_rl.sim.judge import JudgeConfig

    if judge not in ("rules", "lm"):
        fail(f"unknown judge {judge!r}: use 'rules' or 'lm'")
    if not tasks.exists() and n is None:
        fail(f"{tasks} does not exist: pass --n to write that many new held-out tasks there")
    agent = _open_agent(model, model_name, max_tokens)
    out = out or _default_out(agent.name)

    async def run() -> dict[str, Any]:
        lm = CachedLM(open_lm(simulator, simulator_model))
        try:
            _, held_out = load_catalog().split(holdout_fraction, split_seed)
            environment = Environment(lm, held_out, JudgeConfig(mode=judge))  # type: ignore[arg-type]
            if tasks.exists():
                frozen = load_tasks(tasks)
            else:
                assert n is not None
                typer.echo(f"writing {n} held-out tasks to {tasks}", err=True)
                frozen = await freeze_tasks(environment, n, seed, level)
                tasks.parent.mkdir(parents=True, exist_ok=True)
                save_tasks(tasks, frozen)
            with _bar("sim") as update:
                return await evaluate_sim(
                    agent,
                    frozen,
                    environment,
                    out,
                    seed=seed,
                    progress=lambda done, total: update("episodes", done, total),
                )
        finally:
            await lm.aclose()
            await agent.aclose()

    def show(figures: dict[str, Any]) -> None:
        title = f"simulated benchmark — {agent.name} ({figures['episodes']} tasks)"
        _print_scores(title, figures["scores"])

    _run_and_show(run, as_json, show, out)


@eval_app.command()
def tau2(
    model: ModelOption,
    model_name: ModelNameOption = None,
    domains: Annotated[
        str, typer.Option(help="comma-separated: airline, retail, telecom")
    ] = "airline,retail",
    split: Annotated[
        str, typer.Option(help="tau2 task split: 'test', 'train' or 'base' (all tasks)")
    ] = "test",
    trials: Annotated[
        int, typer.Option(min=1, help="episodes per task; pass^k for k ≤ trials")
    ] = 1,
    user_simulator: Annotated[
        str,
        typer.Option(
            help="who plays tau2's customer: 'embedded' or an OpenAI-compatible server URL"
        ),
    ] = "embedded",
    user_model: Annotated[str | None, typer.Option(help="model name on that server")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="first N tasks of each domain")] = None,
    max_steps: Annotated[
        int,
        typer.Option(
            min=1, help="messages (tool calls included) after which an episode ends, scoring 0"
        ),
    ] = TAU2_MAX_STEPS,
    out: OutOption = None,
    max_tokens: MaxTokensOption = 256,
    as_json: JsonOption = False,
) -> None:
    """tau2-bench offline: tau2's orchestrator, user simulator and standard score; our policy."""
    try:
        from trustee_rl.evaluate.tau2 import evaluate_tau2
    except ImportError as error:
        fail(f"tau2 needs the evaluation extras ({error}): run `bash scripts/setup.sh --eval`")
    agent = _open_agent(model, model_name, max_tokens)
    out = out or _default_out(agent.name)
    if user_simulator == "embedded":
        typer.echo(
            "user simulator: the embedded SmolLM2-135M (published tau2 numbers use far stronger "
            "user models)",
            err=True,
        )

    async def run() -> dict[str, Any]:
        with _bar("tau2") as update:
            try:
                return await evaluate_tau2(
                    agent,
                    domains=[d.strip() for d in domains.split(",") if d.strip()],
                    split=split,
                    trials=trials,
                    user_simulator=user_simulator,
                    user_model=user_model,
                    limit=limit,
                    max_steps=max_steps,
                    out=out,
                    progress=lambda done, total: update("episodes", done, total),
                )
            finally:
                await agent.aclose()

    def show(figures: dict[str, Any]) -> None:
        _print_scores(f"tau2-bench — {agent.name} ({split} split)", figures["scores"])

    _run_and_show(run, as_json, show, out)


@eval_app.command()
def compare(
    dirs: Annotated[list[Path], typer.Argument(help="output dirs of `trustee eval` runs")],
    plot: Annotated[
        Path | None, typer.Option(help="SVG chart file (default: comparison.svg)")
    ] = Path("comparison.svg"),
    as_json: JsonOption = False,
) -> None:
    """One table, and a chart, of several models across every benchmark each was evaluated on."""
    from trustee_rl.evaluate.compare import comparison, write_chart

    try:
        table = comparison(dirs)
    except (ValueError, OSError, json.JSONDecodeError) as error:
        fail(one_line(error))
    if as_json:
        typer.echo(json.dumps(table, indent=2))
    else:
        _print_comparison(table)
    if plot is not None:
        write_chart(table, plot)
        typer.echo(f"chart: {plot}", err=True)


def _print_comparison(table: dict[str, Any]) -> None:
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
