"""`trustee judge`: re-judge stored episodes under any judge settings, to iterate on reward design
without rolling anything out again."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ConfigDict, Field

from trustee_rl.cli_common import fail, known_errors, local_runtime, one_line
from trustee_rl.schema import Episode, Task, Verdict
from trustee_rl.sim.judge import JudgeConfig

Record = TypeVar("Record", Task, Episode)


class JudgeCommandConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Rules by default: re-judging is for iterating on rewards, and rules need no model.
    judge: JudgeConfig = Field(default_factory=lambda: JudgeConfig(mode="rules"))
    simulator: str = Field(
        default="embedded", description="the LM judge's model, for judge.mode=lm"
    )
    simulator_model: str | None = None


def judge(
    tasks: Annotated[Path, typer.Option(help="tasks JSONL (`trustee export` or Task records)")],
    episodes: Annotated[
        Path, typer.Option(help="episodes JSONL (`trustee export` or Episode records)")
    ],
    config: Annotated[Path | None, typer.Option(help="YAML file of judge settings")] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="override one setting, e.g. --set judge.reward=graded"),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="one Verdict JSON object per line")
    ] = False,
) -> None:
    """Re-judge stored episodes under the given judge settings."""
    local_runtime()
    from trustee_rl.settings import load_settings

    try:
        # As a dict, so a file or --set that changes one judge key keeps the others.
        defaults = {"judge": JudgeCommandConfig().judge.model_dump()}
        settings = load_settings(JudgeCommandConfig, defaults, config, overrides or [])
        by_id = {task.id: task for task in read_records(tasks, Task)}
        stored = read_records(episodes, Episode)
        missing = sorted({e.task_id for e in stored if e.task_id not in by_id} - {""})
        if missing:
            fail(f"{episodes}: episodes of tasks not in {tasks}, e.g. {missing[0]!r}")
        verdicts = asyncio.run(_rejudge(settings, by_id, stored))
    except known_errors(OSError) as error:
        fail(one_line(error))
    if as_json:
        for verdict in verdicts:
            typer.echo(verdict.model_dump_json())
    else:
        _print_summary(verdicts)


async def _rejudge(
    settings: JudgeCommandConfig, tasks: dict[str, Task], episodes: list[Episode]
) -> list[Verdict]:
    from trustee_rl.lm import open_lm
    from trustee_rl.sim.judge import Judge
    from trustee_rl.sim.structured import SimulatorContext

    lm = (
        open_lm(settings.simulator, settings.simulator_model)
        if settings.judge.mode == "lm"
        else None
    )
    judge = Judge(lm, settings.judge)
    verdicts = []
    try:
        for episode in episodes:
            task = tasks.get(episode.task_id)
            if episode.status != "done" or task is None:  # nothing was played to judge
                reason = episode.end_reason or f"episode {episode.status}"
                verdicts.append(
                    Verdict.unscored(episode.id, reason, judge.model, judge.prompt_version)
                )
                continue
            # The LM judge's calls are made afresh; they are not part of the stored episode.
            context = SimulatorContext(episode.seed, lambda call: None)
            verdicts.append(await judge.judge(task, episode, context))
    finally:
        if lm is not None:
            await lm.aclose()
    return verdicts


def read_records(path: Path, kind: type[Record]) -> list[Record]:
    """Records from a JSONL file: `trustee export` rows (the record under "record") or bare ones."""
    records = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                value: Any = json.loads(line)
                records.append(kind.model_validate(value.get("record", value)))
            except (json.JSONDecodeError, AttributeError, ValueError) as error:
                raise ValueError(
                    f"{path}:{number}: not a {kind.__name__} record ({one_line(error)[:200]})"
                ) from error
    return records


def _print_summary(verdicts: list[Verdict]) -> None:
    from rich.console import Console
    from rich.table import Table

    scored = [v for v in verdicts if v.scored and v.reward is not None]
    table = Table(title="re-judged", show_header=False)
    table.add_row("episodes", str(len(verdicts)))
    table.add_row("scored", f"{len(scored)} ({len(verdicts) - len(scored)} unscored)")
    if scored:
        mean = sum(v.reward for v in scored if v.reward is not None) / len(scored)
        table.add_row("mean reward", f"{mean:+.3f}")
        table.add_row("succeeded", str(sum(v.succeeded for v in scored)))
    names = sorted({c.name for v in scored for c in v.criteria})
    for name in names:
        results = [c.passed for v in scored for c in v.criteria if c.name == name]
        table.add_row(f"criterion {name}", f"{sum(results) / len(results):.0%}")
    Console().print(table)
