"""`trustee simulate` on its zero-setup default: the embedded model plays policy and every simulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustee_rl.cli import app
from trustee_rl.store import RunStore

from .test_simulate_http import replayable

pytestmark = pytest.mark.embedded


def test_embedded_default_runs_and_replays_identically(tmp_path: Path) -> None:
    runner = CliRunner()
    for name in ("a", "b"):
        result = runner.invoke(
            app,
            [
                "simulate",
                "--run-dir",
                str(tmp_path / name),
                "--episodes",
                "1",
                "--seed",
                "1",
                "--json",
            ],
        )
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        assert summary["episodes"] == 1 and summary["simulator_calls"] >= 1
    with RunStore.open(tmp_path / "a") as store:
        episode = store.episodes()[0]
        verdict = store.verdict(episode.id)
        assert verdict is not None and (verdict.scored or verdict.unscored_reason)
        if episode.messages:
            assert episode.messages[0].role == "system" and episode.messages[1].role == "user"
            assert any(m.role == "assistant" for m in episode.messages)
        else:  # the small simulator may fail to write a task: that must be explicit, never a reward
            assert not verdict.scored and "task generation failed" in (
                verdict.unscored_reason or ""
            )
    assert replayable(tmp_path / "a") == replayable(tmp_path / "b")
