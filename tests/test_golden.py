"""A golden run: `trustee simulate --episodes 8 --seed 1` over the loopback server stores the same
records (ids, tasks, messages, simulator calls, verdicts) as the release before the runner and
policy seams were introduced. Regenerate deliberately with TRUSTEE_WRITE_GOLDEN=1 when a change is
meant to alter records, and say why in the commit."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from trustee_rl.cli import app
from trustee_rl.store import RunStore
from trustee_rl.testing.openai_server import AgentResponder, LoopbackOpenAIServer

GOLDEN = Path(__file__).parent / "golden" / "simulate_seed1.json"
# Wall-clock fields, and the policy's label (which names the server URL, a new port every run).
UNSTABLE = {"latency_s", "wall_s", "policy_model"}


def stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: stable(item) for key, item in value.items() if key not in UNSTABLE}
    if isinstance(value, list):
        return [stable(item) for item in value]
    return value


def records(run_dir: Path) -> Any:
    with RunStore.open(run_dir, readonly=True) as store:
        return stable(
            {
                "tasks": sorted(
                    (task.model_dump(mode="json") for task in store.tasks()),
                    key=lambda task: task["id"],
                ),
                "episodes": [episode.model_dump(mode="json") for episode in store.episodes()],
                "verdicts": [verdict.model_dump(mode="json") for verdict in store.verdicts()],
            }
        )


def test_simulate_stores_the_golden_records(tmp_path: Path) -> None:
    with LoopbackOpenAIServer(AgentResponder(seed=0)) as server:
        result = CliRunner().invoke(
            app,
            [
                "simulate",
                "--run-dir",
                str(tmp_path / "run"),
                "--episodes",
                "8",
                "--seed",
                "1",
                "--policy",
                server.base_url,
                "--simulator",
                server.base_url,
                "--judge",
                "lm",
                "--json",
            ],
        )
    assert result.exit_code == 0, result.output
    got = records(tmp_path / "run")
    if os.environ.get("TRUSTEE_WRITE_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    expected = json.loads(GOLDEN.read_text())
    assert len(got["episodes"]) == 8
    for kind in ("tasks", "episodes", "verdicts"):
        for position, (mine, golden) in enumerate(zip(got[kind], expected[kind], strict=True)):
            assert mine == golden, f"{kind}[{position}] differs from the golden run"
