"""The HTML run report, built from a small hand-made run store."""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path
from typing import Literal

import pytest
from typer.testing import CliRunner

from trustee_rl import report as report_module
from trustee_rl.cli import app
from trustee_rl.curriculum import AspectStats, CurriculumState
from trustee_rl.report import build_report, write_report
from trustee_rl.report_charts import Series, format_number, line_chart, nice_ticks
from trustee_rl.schema import CriterionResult, Difficulty, Episode, Message, ToolCall, Verdict
from trustee_rl.store import RunStore

from .conftest import make_task

CHROMIUM = Path("/usr/bin/chromium")
SCRIPT = "<script>alert(1)</script>"
CONFIG = {"policy": "http://policy.example/v1", "simulator": "embedded", "seed": 3, "episodes": 4}
METRICS = {
    0: {"reward_mean": 0.25, "difficulty": 50.0, "loss": 0.9},
    1: {"reward_mean": math.nan, "difficulty": 53.0, "loss": 0.7},
    2: {"reward_mean": 0.5, "difficulty": 56.0, "loss": 0.4},
}
UNSCORED_REASON = "judge output unreadable"


Source = Literal["rule", "judge"]
AspectTable = dict[str, dict[str, AspectStats]]


def criterion(name: str, passed: bool, source: Source = "judge") -> CriterionResult:
    return CriterionResult(
        name=name, passed=passed, reason=f"{name} reason", source=source, score=float(passed)
    )


def judged(episode_id: str, reward: float, criteria: list[CriterionResult]) -> Verdict:
    return Verdict(
        episode_id=episode_id,
        scored=True,
        reward=reward,
        criteria=criteria,
        judge_model="judge-model",
        prompt_version="judge@1",
    )


def conversation() -> list[Message]:
    call = ToolCall(id="call_7", name="get_weather", arguments={"city": "Oslo", "unit": "celsius"})
    return [
        Message(role="system", content="You are a weather assistant."),
        Message(role="user", content=f"What's the weather in Oslo? {SCRIPT}"),
        Message(role="assistant", tool_calls=[call]),
        Message(role="tool", tool_call_id="call_7", name="get_weather", content='{"temp": 4}'),
        Message(role="assistant", content="It is 4 degrees in Oslo."),
    ]


VERDICTS = {
    "ep_0": judged(
        "ep_0",
        1.0,
        [
            criterion("correct_tools", True, "rule"),
            criterion("intent", True),
            criterion("no_hallucination", False),
        ],
    ),
    "ep_1": judged(
        "ep_1", -0.5, [criterion("correct_tools", True, "rule"), criterion("intent", False)]
    ),
    "ep_2": Verdict.unscored("ep_2", UNSCORED_REASON, "judge-model", "judge@1"),
}


def build_store(run_dir: Path, aspect_stats: AspectTable | None = None) -> None:
    """Four episodes: two scored, one unscored, one still running (no verdict)."""
    banking = make_task(
        id="task_bank",
        domain="banking",
        difficulty=Difficulty(
            level=20,
            num_tools=1,
            num_calls=1,
            num_turns=1,
            prompt_specificity="detailed",
            persona="expert",
            ambiguity="clear",
            strictness=2,
        ),
    )
    with RunStore.create(run_dir, CONFIG) as store:
        store.save_task(make_task())
        store.save_task(banking)
        for index, task_id in enumerate(["task_test", "task_bank", "task_test", "task_bank"]):
            episode = Episode(
                id=f"ep_{index}",
                task_id=task_id,
                index=index,
                seed=index,
                policy_model="policy-a",
                messages=conversation(),
                status="done" if index < 3 else "running",
                end_reason="user_done" if index < 3 else None,
            )
            store.save_episode(episode, VERDICTS.get(episode.id))
        for step, values in METRICS.items():
            store.log_metrics(step, values)
        state = CurriculumState(level=53, updates=1, history=[53.0])
        state.aspect_stats = aspect_stats or {}
        store.save_curriculum(0, state.model_dump())


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    build_store(path)
    return path


@pytest.fixture
def html(run_dir: Path) -> str:
    return write_report(run_dir).read_text(encoding="utf-8")


def test_write_report_defaults_to_the_run_dir(run_dir: Path) -> None:
    path = write_report(run_dir)
    assert path == run_dir / "report.html"
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_report_loads_nothing_from_elsewhere(html: str) -> None:
    assert "http://policy.example/v1" in html  # remote text is shown, never fetched
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.IGNORECASE)
    assert "@import" not in html and "url(" not in html


def test_every_metric_gets_a_chart(html: str) -> None:
    for name in ["reward_mean", "difficulty", "loss"]:
        assert f'<svg class="chart" viewBox="0 0 440 240" role="img" aria-label="{name}">' in html
    assert 'aria-label="curriculum level D"' in html
    assert 'aria-label="reward per episode"' in html


def test_criteria_pass_rates_are_reported(html: str) -> None:
    scored = [verdict for verdict in VERDICTS.values() if verdict.scored]
    for name in ["correct_tools", "intent", "no_hallucination"]:
        results = [c for verdict in scored for c in verdict.criteria if c.name == name]
        rate = sum(c.passed for c in results) / len(results)
        row = re.search(rf"<tr><th>{name}</th>.*?</tr>", html)
        assert row is not None, name
        assert f"{100 * rate:.1f}%" in row.group(0)
    assert "50.0%" in html and "100.0%" in html and "0.0%" in html


def test_unscored_reasons_and_pending_episodes_are_shown(html: str) -> None:
    assert UNSCORED_REASON in html
    assert 'href="#ep-2">#2</a>' in html
    assert 'data-state="pending"' in html and "not judged yet" in html


def test_model_text_is_escaped(html: str) -> None:
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert" not in html


def test_episodes_show_the_conversation_task_and_verdict(html: str) -> None:
    for index in range(4):
        assert f'<article class="episode" id="ep-{index}">' in html
    assert "It is 4 degrees in Oslo." in html
    assert '<span class="call-name">get_weather</span>' in html
    assert "&quot;city&quot;: &quot;Oslo&quot;" in html  # pretty JSON arguments
    assert "&quot;temp&quot;: 4" in html  # tool result
    assert "Learn the weather in Oslo." in html  # the task's goal
    assert "Never delete accounts." in html  # a forbidden rule
    assert "no_hallucination reason" in html  # a criterion's reason


def test_aspects_fall_back_to_tasks_and_verdicts(html: str) -> None:
    assert "computed from the tasks&#x27; difficulty and the verdicts" in html
    # ep_0 (strictness 5, reward 1.0) and ep_1 (strictness 2, reward -0.5) are the scored ones.
    assert re.search(r"<h3>strictness</h3>.*?<td>2</td><td class='num'>1</td>", html)


def test_aspects_come_from_the_curriculum_state(tmp_path: Path) -> None:
    stats = {"persona": {"novice": AspectStats(episodes=4, reward_sum=2.0, successes=3)}}
    build_store(tmp_path / "run", stats)
    html = build_report(tmp_path / "run")
    assert "from the curriculum state after update 1" in html
    assert "<td>novice</td><td class='num'>4</td>" in html and "75%" in html


def test_the_browser_is_capped(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report_module, "BROWSER_CAP", 2)
    html = build_report(run_dir)
    assert "Showing the first 2 of 4 episodes" in html
    assert 'id="ep-1"' in html and 'id="ep-2"' not in html


def test_cli_report_writes_where_asked(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "r.html"
    result = CliRunner().invoke(app, ["report", str(run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    assert out.is_file()


def test_cli_report_without_a_store_fails_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(tmp_path / "nothing")])
    assert result.exit_code == 2
    assert "error: " in result.output and "no run.sqlite" in result.output


def test_nice_ticks_are_round_and_cover_the_range() -> None:
    assert nice_ticks(0, 1) == [0, 0.25, 0.5, 0.75, 1]
    assert nice_ticks(-0.93, 0.41) == [-1, -0.5, 0, 0.5]
    assert nice_ticks(0, 3, 6, integer=True) == [0, 1, 2, 3]
    assert nice_ticks(5, 5) == [4.5, 4.75, 5, 5.25, 5.5]


def test_format_number_fits_the_step() -> None:
    assert format_number(0.25, 0.25) == "0.25"
    assert format_number(2.0, 0.5) == "2"
    assert format_number(12000, 2000) == "12k"
    assert format_number(12250, 250) == "12.25k"


def test_line_chart_skips_missing_points_and_escapes() -> None:
    chart = line_chart(
        "<b>", [Series("a&b", [(0, 1.0), (1, None), (2, math.nan), (3, 2.0)], "#000")], x_label="x"
    )
    assert chart.count("<circle") == 2
    assert "&lt;b&gt;" in chart and "a&amp;b" in chart and "<b>" not in chart
    assert "no data" in line_chart("empty", [Series("a", [(0, None)], "#000")], x_label="x")


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)"
)
def test_report_renders_in_headless_chromium(html: str, run_dir: Path, tmp_path: Path) -> None:
    png = tmp_path / "report.png"
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={png}",
        "--window-size=1280,2000",
        (run_dir / "report.html").resolve().as_uri(),
    ]
    subprocess.run(command, check=False, capture_output=True, timeout=120)
    assert png.is_file(), "chromium wrote no screenshot"
    assert png.stat().st_size > 20_000
