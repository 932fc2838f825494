"""The `trustee` command line. Heavy modules are imported inside commands so `--help` is instant."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from trustee_rl.cli_common import fail, known_errors, local_runtime, one_line
from trustee_rl.evaluate.commands import eval_app

app = typer.Typer(
    name="trustee",
    help="Train tool-calling agents with RL in environments a free open model simulates.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(eval_app, name="eval")


@app.command()
def simulate(
    run_dir: Annotated[
        Path, typer.Option(help="where the run store lives; an existing run is resumed")
    ],
    episodes: Annotated[int, typer.Option(min=1, help="episodes in the run")] = 8,
    seed: Annotated[int, typer.Option(help="the run's one seed")] = 0,
    policy: Annotated[
        str, typer.Option(help="'embedded' or the URL of an OpenAI-compatible server")
    ] = "embedded",
    policy_model: Annotated[
        str | None, typer.Option(help="model name on the policy server")
    ] = None,
    simulator: Annotated[
        str, typer.Option(help="'embedded' or the URL of an OpenAI-compatible server")
    ] = "embedded",
    simulator_model: Annotated[
        str | None, typer.Option(help="model name on the simulator server")
    ] = None,
    difficulty: Annotated[
        float | None,
        typer.Option(min=1, max=100, help="hold difficulty D fixed (default: adaptive curriculum)"),
    ] = None,
    catalog: Annotated[
        Path | None, typer.Option(help="tool catalog JSON file or directory (default: shipped)")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="episodes in flight at once")] = 8,
    batch_size: Annotated[
        int | None,
        typer.Option(min=1, help="episodes per curriculum update (default: --concurrency)"),
    ] = None,
    judge: Annotated[
        str, typer.Option(help="'lm' (rules + simulator rubric) or 'rules' (deterministic only)")
    ] = "lm",
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Roll out episodes in simulated environments, judge them, and store everything."""
    try:
        summary = _simulate(
            run_dir=run_dir,
            episodes=episodes,
            seed=seed,
            policy=policy,
            policy_model=policy_model,
            simulator=simulator,
            simulator_model=simulator_model,
            difficulty=difficulty,
            catalog=catalog,
            concurrency=concurrency,
            batch_size=batch_size or concurrency,
            judge=judge,
            quiet=as_json,
        )
    except known_errors() as error:
        fail(one_line(error))
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        _print_summary(summary)


def _simulate(
    *,
    run_dir: Path,
    difficulty: float | None,
    catalog: Path | None,
    judge: str,
    quiet: bool,
    **options: Any,
) -> dict[str, Any]:
    from trustee_rl.curriculum import CurriculumConfig
    from trustee_rl.sim.judge import JudgeConfig
    from trustee_rl.simulation import RESUME_KEYS, SimulateConfig, World
    from trustee_rl.store import RunStore

    curriculum = CurriculumConfig()
    if difficulty is not None:
        curriculum = CurriculumConfig(initial_level=difficulty, mode="fixed")
    config = SimulateConfig(
        **options,
        catalog=str(catalog.resolve()) if catalog else None,
        curriculum=curriculum,
        judge=JudgeConfig.model_validate({"mode": judge}),
    )
    world = World.open(config)  # catalog and backends are checked before anything is written
    store, resumed = RunStore.open_or_create(
        run_dir, config.model_dump(mode="json"), resume_keys=RESUME_KEYS
    )
    started = time.perf_counter()
    try:
        with _progress(config.episodes, len(store.completed_indices()), quiet) as on_episode:
            asyncio.run(_run_and_close(config, store, world, on_episode))
        return _summary(store, time.perf_counter() - started, resumed)
    finally:
        store.close()


async def _run_and_close(config: Any, store: Any, world: Any, on_episode: Any) -> None:
    from trustee_rl.simulation import run_simulation

    try:
        await run_simulation(config, store, world, on_episode)
    finally:
        await world.close()


class _progress:
    """A progress bar over episodes, showing the running mean reward."""

    def __init__(self, total: int, done: int, quiet: bool) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.rewards: list[float] = []
        self.progress = Progress(
            TextColumn("[bold]simulate"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            disable=quiet,
            console=_stderr_console(),
            transient=True,
        )
        self.task_id = self.progress.add_task("episodes", total=total, completed=done, status="")

    def __enter__(self) -> Any:
        self.progress.start()
        return self.update

    def update(self, episode: Any, verdict: Any) -> None:
        if verdict.scored:
            self.rewards.append(verdict.reward)
        mean = sum(self.rewards) / len(self.rewards) if self.rewards else float("nan")
        self.progress.update(
            self.task_id, advance=1, status=f"mean reward {mean:+.2f} ({len(self.rewards)} scored)"
        )

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _summary(store: Any, wall_s: float, resumed: bool) -> dict[str, Any]:
    episodes = store.episodes()
    summary: dict[str, Any] = store.summary()
    summary["simulator_calls"] = sum(len(e.sim_calls) for e in episodes)
    usage = [e.usage for e in episodes]
    summary["prompt_tokens"] = sum(u.prompt_tokens for u in usage)
    summary["completion_tokens"] = sum(u.completion_tokens for u in usage)
    summary["unscored_reasons"] = sorted(
        {v.unscored_reason for v in store.verdicts() if not v.scored}
    )
    summary["wall_s"] = round(wall_s, 2)
    summary["resumed"] = resumed
    return summary


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="simulation summary", show_header=False)
    mean = summary["mean_reward"]
    rows = [
        ("episodes", summary["episodes"]),
        ("scored", f"{summary['scored']} ({summary['unscored']} unscored)"),
        ("mean reward", "n/a" if mean is None else f"{mean:+.3f}"),
        ("simulator calls", summary["simulator_calls"]),
        (
            "tokens (prompt / completion)",
            f"{summary['prompt_tokens']} / {summary['completion_tokens']}",
        ),
        ("wall time", f"{summary['wall_s']:.1f} s"),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    from rich.console import Console

    Console().print(table)
    for reason in summary["unscored_reasons"]:
        typer.echo(f"unscored: {reason}")


@app.command()
def train(
    run_dir: Annotated[
        Path, typer.Option(help="where checkpoints, metrics and the run store go")
    ] = Path("runs/train"),
    preset: Annotated[
        str, typer.Option(help="'cpu' (laptop, embedded models) or 'paper' (TRUSTEE on GPUs)")
    ] = "cpu",
    config: Annotated[
        Path | None, typer.Option(help="YAML file of settings on top of the preset")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="override one setting, e.g. --set steps=5 (repeatable)"),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="continue the run in --run-dir from its last checkpoint")
    ] = False,
) -> None:
    """Train a tool-calling policy with GRPO in simulated environments."""
    local_runtime()
    from trustee_rl.store import STORE_FILE
    from trustee_rl.train.config import TrainingRefused, load_train_config

    try:
        settings = load_train_config(preset, config, overrides or [])
        exists = (run_dir / STORE_FILE).exists()
        if exists and not resume:
            fail(
                f"run dir {run_dir} already holds a run: pass --resume to continue it, or choose another --run-dir"
            )
        if resume and not exists:
            fail(f"run dir {run_dir} holds no run to resume")
        from trustee_rl.train.trl_grpo import Training

        stages = Training(settings, run_dir, report=lambda line: typer.echo(line, err=True)).run()
    except TrainingRefused as error:
        fail(one_line(error))
    except known_errors() as error:
        fail(one_line(error))
    _print_stages(stages, run_dir)


def _print_stages(stages: dict[str, Any], run_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"held-out first replies ({run_dir})")
    columns = ("any_call", "valid_call", "right_tool", "argument_accuracy")
    table.add_column("stage")
    for column in columns:
        table.add_column(column.replace("_", " "), justify="right")
    for stage in ("base", "warm_start", "grpo"):
        if stage in stages:
            table.add_row(stage, *(f"{stages[stage][c]:.1%}" for c in columns))
    Console().print(table)
    typer.echo(f"final checkpoint: {run_dir / 'final'}")


@app.command()
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
        with RunStore.open(run_dir) as store:
            paths = store.export(out, fmt)  # type: ignore[arg-type]
    except known_errors() as error:
        fail(one_line(error))
    for path in paths:
        typer.echo(str(path))


@app.command()
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


def main() -> None:
    app(prog_name="trustee")


if __name__ == "__main__":
    main()
