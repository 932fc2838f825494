"""Crash safety by force: `trustee simulate` killed with SIGKILL at random points and resumed with
the same command leaves a store equal in its totals to an uninterrupted run's, with no orphan or
duplicate rows. (benchmarks/kill_loop.py runs the longer loop, with `trustee train` too.)"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustee_rl.cli import app
from trustee_rl.store import STORE_FILE, RunStore
from trustee_rl.testing.kill_loop import audit, kill_loop
from trustee_rl.testing.openai_server import AgentResponder, LoopbackOpenAIServer


@pytest.fixture
def server() -> Iterator[LoopbackOpenAIServer]:
    with LoopbackOpenAIServer(AgentResponder(seed=0), delay_s=0.01) as running:
        yield running


def simulate_args(server: LoopbackOpenAIServer, run_dir: Path, episodes: int) -> list[str]:
    return [
        "simulate",
        "--run-dir",
        str(run_dir),
        "--episodes",
        str(episodes),
        "--seed",
        "4",
        "--concurrency",
        "3",
        "--policy",
        server.base_url,
        "--simulator",
        server.base_url,
        "--json",
    ]


def test_simulate_killed_at_random_points_resumes_to_the_uninterrupted_totals(
    server: LoopbackOpenAIServer, tmp_path: Path
) -> None:
    def command(run_dir: Path) -> list[str]:
        return [sys.executable, "-m", "trustee_rl.cli", *simulate_args(server, run_dir, 18)]

    report = kill_loop("simulate", command, tmp_path, kills=5, seed=1, timeout_s=120)
    assert report.ok, "\n".join(report.lines())
    assert report.kills == 5 and report.kills_while_storing >= 1 and report.audits
    assert report.reference.totals["episodes"] == 18
    assert report.reference.totals["steps"] == 6  # batches of --concurrency


def test_a_kill_between_the_curriculum_and_metrics_writes_is_made_good_on_resume(
    server: LoopbackOpenAIServer, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    assert CliRunner().invoke(app, simulate_args(server, run_dir, 6)).exit_code == 0
    # A batch stores its curriculum state, then its metrics: a kill in between leaves this.
    with closing(sqlite3.connect(run_dir / STORE_FILE)) as db, db:
        db.execute("DELETE FROM metrics WHERE step = 1")
    assert audit(run_dir).problems == {"steps with a curriculum state but no metrics": 1}

    resumed = CliRunner().invoke(app, simulate_args(server, run_dir, 6))
    assert resumed.exit_code == 0, resumed.output
    assert audit(run_dir).healthy
    with RunStore.open(run_dir, readonly=True) as store:
        assert {step for step, name, _ in store.metrics() if name == "mean_reward"} == {0, 1}


def test_the_audit_finds_orphan_and_duplicate_rows(
    server: LoopbackOpenAIServer, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    assert CliRunner().invoke(app, simulate_args(server, run_dir, 3)).exit_code == 0
    assert audit(run_dir).healthy
    with closing(sqlite3.connect(run_dir / STORE_FILE)) as db, db:
        db.execute(
            "DELETE FROM verdicts WHERE episode_id = (SELECT id FROM episodes WHERE idx = 0)"
        )
        db.execute(
            "INSERT INTO tasks SELECT id || '-copy', seed, domain, level, json, created_at FROM tasks LIMIT 1"
        )
        db.execute("DELETE FROM episodes WHERE idx = 1")
    assert audit(run_dir).problems == {
        "episodes without a verdict": 1,
        "verdicts without an episode": 1,
        "tasks no episode plays": 2,
        "missing episode indices": 1,
        "tasks stored twice under different ids": 1,
    }
