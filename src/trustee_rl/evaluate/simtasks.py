"""What `trustee eval sim` plays with: its frozen tasks (a training run's held-out set, a task
file's, or new ones the simulator writes there), the simulator over the held-out catalog domains,
and, for first replies alone, the policy as training's held-out check runs it.

Bad input ends the command with one line (`cli_common.fail`), before any model is loaded where
it can be told then.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from trustee_rl.cli_common import fail, known_errors, one_line

if TYPE_CHECKING:
    from trustee_rl.environment import Environment
    from trustee_rl.evaluate.config import SimSettings
    from trustee_rl.policy.base import Policy
    from trustee_rl.schema import Task


def frozen_tasks(settings: SimSettings) -> list[Task] | None:
    """The tasks of --run-dir or of an existing --tasks file; None when --tasks is to be written."""
    from trustee_rl.task_files import load_task_file

    if settings.level is not None and settings.max_level is not None:
        fail("--level writes new tasks at one difficulty, --max-level spreads them: give one")
    if (settings.run_dir is None) == (settings.tasks is None):
        fail("name the tasks: --run-dir RUN (its held-out tasks) or --tasks FILE.jsonl")
    if settings.run_dir is not None:
        if settings.n is not None:
            fail("--n writes new tasks to --tasks; a run's held-out tasks are frozen already")
        return _run_heldout_tasks(settings.run_dir)
    assert settings.tasks is not None
    if settings.tasks.exists():
        try:
            return load_task_file(settings.tasks)
        except known_errors() as error:
            fail(one_line(error))
    if settings.n is None:
        fail(
            f"{settings.tasks} does not exist: pass --n to write that many new held-out tasks there"
        )
    return None


def _run_heldout_tasks(run_dir: Path) -> list[Task]:
    from trustee_rl.store import RunStore

    try:
        with RunStore.open(run_dir, readonly=True) as store:
            tasks = store.heldout_tasks()
    except known_errors() as error:
        fail(one_line(error))
    if not tasks:
        fail(f"run dir {run_dir} holds no held-out tasks (it was trained with eval.tasks=0)")
    return tasks


@contextlib.asynccontextmanager
async def held_out_environment(settings: SimSettings) -> AsyncIterator[Environment]:
    """The simulator over the catalog domains held out by --split-seed/--holdout-fraction."""
    from trustee_rl.environment import Environment
    from trustee_rl.lm import open_lm
    from trustee_rl.lm.cache import CachedLM
    from trustee_rl.sim.catalog import load_catalog

    lm = CachedLM(open_lm(settings.simulator, settings.simulator_model))
    try:
        _, held_out = load_catalog().split(settings.holdout_fraction, settings.split_seed)
        yield Environment(lm, held_out, settings.judge, settings.taskgen)
    finally:
        await lm.aclose()


async def write_tasks(settings: SimSettings, environment: Environment) -> list[Task]:
    """--n new tasks written to --tasks: at --level, or spread over 1..--max-level."""
    from trustee_rl.evaluate.simbench import DEFAULT_LEVEL, freeze_spread_tasks, freeze_tasks
    from trustee_rl.task_files import write_task_file

    path, count = settings.tasks, settings.n
    assert path is not None and count is not None
    if settings.max_level is not None:
        typer.echo(
            f"writing {count} held-out tasks to {path}, difficulty 1 to {settings.max_level:g}",
            err=True,
        )
        tasks = await freeze_spread_tasks(environment, count, settings.seed, settings.max_level)
    else:
        level = settings.level if settings.level is not None else DEFAULT_LEVEL
        typer.echo(f"writing {count} held-out tasks to {path}, difficulty {level:g}", err=True)
        tasks = await freeze_tasks(environment, count, settings.seed, level)
    write_task_file(path, tasks)
    return tasks


async def write_tasks_alone(settings: SimSettings) -> list[Task]:
    """New tasks written to --tasks, the simulator closed again before anything else runs."""
    async with held_out_environment(settings) as environment:
        return await write_tasks(settings, environment)


def first_reply_policy(policy: Policy) -> Policy:
    """An in-process model stopped where its first call closes, as training's held-out check runs
    it: nothing after that call is graded, and generating it would cost most of the time."""
    if not policy.trainable:  # a server or llama.cpp: its replies as it writes them
        return policy
    from trustee_rl.policy.transformers import TransformersPolicy

    if not isinstance(policy, TransformersPolicy):
        return policy
    return TransformersPolicy(
        policy.model,
        policy.tokenizer,
        name=policy.name,
        chat_format=policy.chat_format,
        max_new_tokens=policy.max_new_tokens,
        temperature=0.0,
        stop_after_call=True,
    )
