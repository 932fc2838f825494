"""`trustee simulate`: roll out, judge and store episodes; no training."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from trustee_rl.cli.run_kind import check_run_kind
from trustee_rl.cli_common import fail, known_errors, local_runtime, one_line, use_api_key_file


def simulate(
    run_dir: Annotated[
        Path, typer.Option(help="where the run store lives; an existing run is resumed")
    ],
    config: Annotated[
        Path | None, typer.Option(help="YAML file of settings (any key of the simulate config)")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="override one setting, e.g. --set judge.reward=levels"),
    ] = None,
    episodes: Annotated[int | None, typer.Option(help="episodes in the run [8]")] = None,
    seed: Annotated[int | None, typer.Option(help="the run's one seed [0]")] = None,
    policy: Annotated[
        str | None,
        typer.Option(help="'embedded', a checkpoint dir, a hub id, a .gguf file or a server URL"),
    ] = None,
    policy_model: Annotated[
        str | None, typer.Option(help="model name on the policy server")
    ] = None,
    simulator: Annotated[
        str | None, typer.Option(help="'embedded' or the URL of an OpenAI-compatible server")
    ] = None,
    simulator_model: Annotated[
        str | None, typer.Option(help="model name on the simulator server")
    ] = None,
    difficulty: Annotated[
        float | None,
        typer.Option(help="hold difficulty D (1-100) fixed (default: adaptive curriculum)"),
    ] = None,
    catalog: Annotated[
        Path | None, typer.Option(help="tool catalog JSON file or directory (default: shipped)")
    ] = None,
    tasks: Annotated[
        Path | None,
        typer.Option(
            help="JSONL file of tasks (from `trustee tasks synthesize`) to play in turn instead "
            "of generating tasks"
        ),
    ] = None,
    concurrency: Annotated[int | None, typer.Option(help="episodes in flight at once [8]")] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(help="episodes per curriculum update (default: --concurrency)"),
    ] = None,
    judge: Annotated[
        str | None,
        typer.Option(help="'lm' (rules + simulator rubric) or 'rules' (deterministic only)"),
    ] = None,
    api_key_file: Annotated[
        Path | None,
        typer.Option(
            help="file holding the servers' API key [default: $OPENAI_API_KEY]; never stored"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Roll out episodes in simulated environments, judge them, and store everything."""
    local_runtime()
    from trustee_rl.settings import load_settings, merge
    from trustee_rl.simulation import SimulateConfig

    # The flags are shorthands for settings: they go on top of the file, under every --set.
    flags: dict[str, Any] = {
        "episodes": episodes,
        "seed": seed,
        "policy": policy,
        "policy_model": policy_model,
        "simulator": simulator,
        "simulator_model": simulator_model,
        "concurrency": concurrency,
        "batch_size": concurrency if batch_size is None else batch_size,
        "catalog": str(catalog.resolve()) if catalog else None,
        "tasks": str(tasks.resolve()) if tasks else None,
        "judge": {"mode": judge} if judge else None,
        "curriculum": (
            None if difficulty is None else {"initial_level": difficulty, "mode": "fixed"}
        ),
    }
    defaults: dict[str, Any] = {}
    try:
        use_api_key_file(api_key_file)
        if config is not None:
            defaults = load_settings(SimulateConfig, {}, config).model_dump(exclude_unset=True)
        merge(defaults, {key: value for key, value in flags.items() if value is not None})
        settings = load_settings(SimulateConfig, defaults, None, overrides or [])
        summary = _simulate(run_dir, settings, quiet=as_json)
    except known_errors() as error:
        fail(one_line(error))
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        _print_summary(summary)


def _simulate(run_dir: Path, config: Any, *, quiet: bool) -> dict[str, Any]:
    from trustee_rl.simulation import RESUME_KEYS, World
    from trustee_rl.store import RunStore

    check_run_kind(run_dir, "simulate")
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
