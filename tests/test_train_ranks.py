"""`trustee train` over two processes under `accelerate launch` (CPU, gloo): each rank plays its
own groups, rank 0 alone writes the run store, and the curriculum moves with every rank's results."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from trustee_rl.curriculum import CurriculumState
from trustee_rl.store import STORE_FILE, RunStore
from trustee_rl.testing.openai_server import AgentResponder, LoopbackOpenAIServer
from trustee_rl.testing.tiny_train import TINY_TRAIN, set_options

pytestmark = pytest.mark.train

STEPS, TASKS_PER_STEP, GROUP_SIZE = 2, 2, 2  # a group per rank per step
EPISODES = STEPS * TASKS_PER_STEP * GROUP_SIZE


@pytest.fixture
def server() -> Any:
    with LoopbackOpenAIServer(AgentResponder(seed=0)) as running:
        yield running


def launch(server: LoopbackOpenAIServer, run_dir: Path, *extra: str) -> str:
    """`trustee train` under `accelerate launch` with two processes; returns its stdout."""
    with closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = [
        *TINY_TRAIN,
        f"tasks_per_step={TASKS_PER_STEP}",
        f"steps={STEPS}",
        f"simulator={server.base_url}",
        "eval.reply_tokens=8",
        # The warm start too: collected by rank 0, trained on by both ranks, one each.
        *("warm_start.enabled=true", "warm_start.demos=2", "warm_start.max_attempts=8"),
        "warm_start.batch_size=2",
    ]
    command = [
        *(sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"),
        *("--num_processes", "2", "--num_machines", "1", "--main_process_port", str(port)),
        *("--mixed_precision", "no", "--dynamo_backend", "no"),
        *("-m", "trustee_rl.cli", "train", "--run-dir", str(run_dir), *set_options(settings)),
        *extra,
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=900,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def check_store(run_dir: Path) -> list[tuple[int, str]]:
    """The run store is whole and holds every rank's episodes once; returns (index, task id)."""
    with closing(sqlite3.connect(f"{(run_dir / STORE_FILE).as_uri()}?mode=ro", uri=True)) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = db.execute("SELECT idx, task_id FROM episodes ORDER BY idx").fetchall()
        assert db.execute("SELECT COUNT(*) FROM verdicts").fetchone() == (EPISODES,)
    with RunStore.open(run_dir, readonly=True) as store:
        episodes = store.episodes()
        verdicts = store.verdicts()
        states = store.curriculum_states()
        rewards = [(step, value) for step, name, value in store.metrics() if name == "reward_mean"]
        assert list(store.stages()) == ["base", "warm_start", "grpo"]
    # Rank 1 plays the second group of each step: indices 2, 3 and 6, 7.
    assert [index for index, _ in rows] == list(range(EPISODES))
    groups = [rows[start][1] for start in range(0, EPISODES, GROUP_SIZE)]
    assert len(set(groups)) == len(groups), "each group, on either rank, drew its own task"
    assert all(rows[i][1] == rows[i - i % GROUP_SIZE][1] for i in range(EPISODES))
    taskgen = [any(call.role == "taskgen" for call in e.sim_calls) for e in episodes]
    assert taskgen == [True, False] * (EPISODES // GROUP_SIZE)
    assert [step for step, _ in rewards] == list(range(STEPS))
    assert [step for step, _ in states] == list(range(STEPS))
    # The curriculum moved once per step, on the scored episodes of both ranks.
    last = CurriculumState.model_validate(states[-1][1])
    assert last.updates == STEPS
    assert sum(s.episodes for s in last.aspect_stats["persona"].values()) == sum(
        v.scored for v in verdicts
    )
    return rows


def test_two_processes_train_into_one_store_and_resume(
    server: LoopbackOpenAIServer, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    printed = launch(server, run_dir)
    assert printed.count("final checkpoint:") == 1  # printed by rank 0 alone
    played = check_store(run_dir)
    assert (run_dir / "checkpoints" / f"checkpoint-{STEPS}" / "trainer_state.json").is_file()
    assert (run_dir / "final" / "config.json").is_file()

    # As if killed after the first checkpoint: the second step is replayed, the same episodes
    # on the same tasks, each stored once.
    shutil.rmtree(run_dir / "checkpoints" / f"checkpoint-{STEPS}")
    launch(server, run_dir, "--resume")
    assert check_store(run_dir) == played
