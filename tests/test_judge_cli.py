"""`trustee judge` re-scores the episodes a real run stored, from `trustee export`'s files."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from trustee_rl.cli import app
from trustee_rl.schema import Verdict
from trustee_rl.store import RunStore
from trustee_rl.testing.openai_server import AgentResponder, LoopbackOpenAIServer

runner = CliRunner()


def simulated_export(tmp_path: Path) -> tuple[Path, list[Verdict]]:
    run = tmp_path / "run"
    with LoopbackOpenAIServer(AgentResponder(seed=0)) as server:
        result = runner.invoke(
            app,
            [
                "simulate",
                "--run-dir",
                str(run),
                "--episodes",
                "6",
                "--seed",
                "2",
                "--judge",
                "rules",
                "--policy",
                server.base_url,
                "--simulator",
                server.base_url,
                "--json",
            ],
        )
    assert result.exit_code == 0, result.output
    exported = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "out")])
    assert exported.exit_code == 0, exported.output
    with RunStore.open(run, readonly=True) as store:
        return tmp_path / "out", store.verdicts()


def rejudge(out: Path, *extra: str) -> list[Verdict]:
    result = runner.invoke(
        app,
        [
            "judge",
            "--tasks",
            str(out / "tasks.jsonl"),
            "--episodes",
            str(out / "episodes.jsonl"),
            "--json",
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    return [Verdict.model_validate_json(line) for line in result.stdout.splitlines()]


def test_same_settings_give_the_stored_verdicts_and_other_settings_other_rewards(
    tmp_path: Path,
) -> None:
    out, stored = simulated_export(tmp_path)
    assert rejudge(out) == stored  # the run judged by rules, levels: the command's defaults
    graded = rejudge(out, "--set", "judge.reward=graded")
    assert [v.episode_id for v in graded] == [v.episode_id for v in stored]
    assert [v.criteria for v in graded] == [v.criteria for v in stored]  # still rules only
    # Violations stay below zero in both maps; where levels gave 0, graded gives a share in [0, 1).
    pairs = [(v.reward, g.reward) for v, g in zip(stored, graded, strict=True)]
    assert all(
        share is not None and -1.0 <= share <= -0.5 for level, share in pairs if level == -1.0
    )
    assert any(level == 0.0 and share is not None and 0.0 < share < 1.0 for level, share in pairs)


def test_bad_records_are_a_one_line_error(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"id": "t"}\n')
    episodes = tmp_path / "episodes.jsonl"
    episodes.write_text("")
    result = runner.invoke(app, ["judge", "--tasks", str(tasks), "--episodes", str(episodes)])
    assert result.exit_code == 2
    assert f"{tasks}:1: not a Task record" in result.output
    assert len(result.output.strip().splitlines()) == 1
    unknown = runner.invoke(
        app,
        [
            "judge",
            "--tasks",
            str(episodes),
            "--episodes",
            str(episodes),
            "--set",
            "judge.mood=kind",
        ],
    )
    assert unknown.exit_code == 2 and "judge.mood" in unknown.output
