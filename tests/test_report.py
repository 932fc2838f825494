"""The HTML run report, built from a real run store written through the store's own API."""

from __future__ import annotations

import math
import re
import sqlite3
import subprocess
from contextlib import closing
from html.parser import HTMLParser
from pathlib import Path
from typing import Literal

import pytest
from markupsafe import escape
from typer.testing import CliRunner

from trustee_rl.cli import app
from trustee_rl.curriculum import AspectStats, CurriculumState
from trustee_rl.report import build_report, write_report
from trustee_rl.report.charts import Series, format_number, line_chart, nice_ticks
from trustee_rl.schema import (
    CriterionResult,
    Difficulty,
    Episode,
    HeldoutScores,
    Message,
    SimCall,
    StageRecord,
    ToolCall,
    Verdict,
)
from trustee_rl.store import STORE_FILE, RunStore

from .conftest import make_task

CHROMIUM = Path("/usr/bin/chromium")
SCRIPT = "<script>alert(1)</script>"
ATTRIBUTE_BREAKOUT = '"><img src=x onerror=alert(2)>'
CONFIG = {"policy": "http://policy.example/v1", "simulator": "embedded", "seed": 3, "episodes": 5}
METRICS = {
    0: {"reward_mean": 0.25, "difficulty": 50.0, "loss": 0.9, "<b>odd</b>": 1.0},
    1: {"reward_mean": math.nan, "difficulty": 53.0, "loss": 0.7},
    2: {"reward_mean": 0.5, "difficulty": 56.0, "loss": 0.4},
}
UNSCORED_REASON = "judge output unreadable"
BASE = HeldoutScores(tasks=2, any_call=0.5, valid_call=0.0, right_tool=0.25, argument_accuracy=0.1)
GRPO = HeldoutScores(tasks=2, any_call=1.0, valid_call=0.5, right_tool=0.5, argument_accuracy=0.3)

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
        Message(
            role="assistant", content=f"It is 4 degrees in Oslo. {SCRIPT} {ATTRIBUTE_BREAKOUT}"
        ),
    ]


def sim_call() -> SimCall:
    return SimCall(
        role="tool",
        model="sim-model",
        prompt_version="tool@1",
        messages=[{"role": "user", "content": f"simulate get_weather {ATTRIBUTE_BREAKOUT}"}],
        output='{"temp": 4}',
    )


# ep_1 has a positive reward below the top: scored, but not a success.
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
        "ep_1", 0.5, [criterion("correct_tools", True, "rule"), criterion("intent", False)]
    ),
    "ep_2": Verdict.unscored("ep_2", UNSCORED_REASON, "judge-model", "judge@1"),
}


def build_store(
    run_dir: Path, aspect_stats: AspectTable | None = None, stages: bool = True
) -> None:
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
                sim_calls=[sim_call()],
                status="done" if index < 3 else "running",
                end_reason="user_done" if index < 3 else None,
            )
            store.save_episode(episode, VERDICTS.get(episode.id))
        for step, values in METRICS.items():
            store.log_metrics(step, values)
        state = CurriculumState(level=53, updates=1, history=[53.0])
        state.aspect_stats = aspect_stats or {}
        store.save_curriculum(0, state.model_dump())
        if stages:
            store.freeze_heldout_tasks(
                [make_task(id="held_1", goal="Held-out goal one."), make_task(id="held_2")]
            )
            store.save_stage(StageRecord(name="base", scores=BASE, wall_s=3.5))
            store.save_stage(
                StageRecord(name="grpo", scores=GRPO, training={"steps": 20.0}, wall_s=61.0)
            )


def make_old_store(run_dir: Path) -> None:
    """A store as trustee-rl wrote it before migration 2 (held-out tasks and stages) existed."""
    build_store(run_dir, stages=False)
    with closing(sqlite3.connect(run_dir / STORE_FILE)) as conn, conn:
        conn.execute("DELETE FROM _migrations WHERE number = 2")
        conn.execute("DROP TABLE heldout_tasks")
        conn.execute("DROP TABLE stages")


class _Tags(HTMLParser):
    """Every element a browser would create from the page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)


def tags(html: str) -> list[str]:
    parser = _Tags()
    parser.feed(html)
    return parser.tags


def store_state(run_dir: Path) -> tuple[bytes, int]:
    path = run_dir / STORE_FILE
    return path.read_bytes(), path.stat().st_mtime_ns


def criterion_row(html: str, name: str) -> str:
    row = re.search(rf'<tr class="criterion"><th>{name}</th>.*?</tr>', html, re.DOTALL)
    assert row is not None, name
    return row.group(0)


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


def test_report_is_one_self_contained_file(html: str) -> None:
    assert "http://policy.example/v1" in html  # remote text is shown, never fetched
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.IGNORECASE)
    assert "@import" not in html and "url(" not in html
    style = re.search(r"<style>(.*?)</style>", html, re.DOTALL)
    script = re.search(r"<script>(.*?)</script>", html, re.DOTALL)
    assert style is not None and ".ep-list" in style.group(1)
    assert script is not None and 'getElementById("ep-search")' in script.group(1)


def test_model_text_is_only_ever_text(html: str) -> None:
    assert str(escape(SCRIPT)) in html
    assert str(escape(ATTRIBUTE_BREAKOUT)) in html
    assert SCRIPT not in html and ATTRIBUTE_BREAKOUT not in html
    elements = tags(html)
    assert elements.count("script") == 1  # the report's own
    assert "img" not in elements


def test_every_metric_gets_a_chart(html: str) -> None:
    for name in ["reward_mean", "difficulty", "loss", "curriculum level D", "reward per episode"]:
        assert f'<svg class="chart" viewBox="0 0 440 240" role="img" aria-label="{name}">' in html
    assert 'aria-label="&lt;b&gt;odd&lt;/b&gt;"' in html


def test_overview_counts_successes_by_the_verdicts(html: str) -> None:
    cards = re.findall(
        r'<div class="card-value">(.*?)</div><div class="card-label">(.*?)</div>', html
    )
    by_label = {label: value for value, label in cards}
    assert by_label["episodes"] == "4"
    assert by_label["scored"] == "2"
    assert by_label["unscored"] == "1"
    assert by_label["pending"] == "1"
    assert by_label["succeeded"] == "1 (50%)"  # ep_1's 0.5 is no success
    assert by_label["mean reward"] == "+0.75"


def test_criteria_pass_rates_are_reported(html: str) -> None:
    scored = [verdict for verdict in VERDICTS.values() if verdict.scored]
    for name in ["correct_tools", "intent", "no_hallucination"]:
        results = [c for verdict in scored for c in verdict.criteria if c.name == name]
        rate = sum(c.passed for c in results) / len(results)
        assert f"{100 * rate:.1f}%" in criterion_row(html, name)
    assert "#0–0" in html and "#1–1" in html  # one column per chunk of episodes


def test_unscored_reasons_and_pending_episodes_are_shown(html: str) -> None:
    assert UNSCORED_REASON in html
    assert '<a href="#ep-2">#2</a>' in html
    assert 'data-state="pending"' in html and "not judged yet" in html


def test_episodes_show_the_conversation_task_and_verdict(html: str) -> None:
    for index in range(4):
        assert f'<article class="episode" id="ep-{index}">' in html
    assert "It is 4 degrees in Oslo." in html
    assert '<span class="call-name">get_weather</span>' in html
    assert "&#34;city&#34;: &#34;Oslo&#34;" in html  # pretty JSON arguments
    assert "&#34;temp&#34;: 4" in html  # tool result
    assert "Learn the weather in Oslo." in html  # the task's goal
    assert "Never delete accounts." in html  # a forbidden rule
    assert "no_hallucination reason" in html  # a criterion's reason
    assert "<b>tool</b> · tool@1 · sim-model · 1 attempt · 0.00 s" in html  # a simulator call
    assert html.count('<span class="pass">succeeded</span>') == 1


def test_aspects_fall_back_to_tasks_and_verdicts(html: str) -> None:
    assert "computed from the tasks&#39; difficulty and the verdicts" in html
    # ep_0 (strictness 5, reward 1.0) succeeded; ep_1 (strictness 2, reward 0.5) did not.
    strictness = re.search(r"<h3>strictness</h3>(.*?)</table>", html, re.DOTALL)
    assert strictness is not None
    row = r'<tr><td>(\d)</td><td class="num">(\d)</td><td class="rate">.*?</span></span> (\d+)%'
    rows = re.findall(row, strictness[1])
    assert rows == [("2", "1", "0"), ("5", "1", "100")]


def test_aspects_come_from_the_curriculum_state(tmp_path: Path) -> None:
    stats = {"persona": {"novice": AspectStats(episodes=4, reward_sum=2.0, successes=3)}}
    build_store(tmp_path / "run", stats)
    html = build_report(tmp_path / "run")
    assert "from the curriculum state after update 1" in html
    assert '<tr><td>novice</td><td class="num">4</td>' in html and "75%" in html


def test_heldout_stages_are_compared(html: str) -> None:
    rows = dict(re.findall(r'<tr class="stage"><th>(\w+)</th>(.*?)</tr>', html, re.DOTALL))
    assert list(rows) == ["base", "grpo"]
    assert "25.0%" in rows["base"] and "delta" not in rows["base"]
    assert "50.0%" in rows["grpo"] and "+25.0" in rows["grpo"]  # right_tool rose 25 points
    assert "steps=20" in rows["grpo"] and "61.0 s" in rows["grpo"]
    assert "held-out tasks (2)" in html and "Held-out goal one." in html


def test_the_browser_is_capped(run_dir: Path) -> None:
    html = build_report(run_dir, browser_cap=2)
    assert "Showing the first 2 of 4 episodes" in html
    assert 'id="ep-1"' in html and 'id="ep-2"' not in html
    assert '<a href="#ep-2">' not in html  # the unscored list names it without a dead link


def test_cli_report_writes_where_asked_and_leaves_the_store_alone(
    run_dir: Path, tmp_path: Path
) -> None:
    before = store_state(run_dir)
    out = tmp_path / "out" / "r.html"
    result = CliRunner().invoke(app, ["report", str(run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    assert "Episode 3" in out.read_text(encoding="utf-8")
    assert store_state(run_dir) == before


def test_an_old_store_is_reported_and_left_as_it_was(tmp_path: Path) -> None:
    run_dir = tmp_path / "old"
    make_old_store(run_dir)
    before = store_state(run_dir)
    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "It is 4 degrees in Oslo." in html
    assert 'id="stages"' not in html and 'href="#stages"' not in html
    assert store_state(run_dir) == before
    with closing(sqlite3.connect(run_dir / STORE_FILE)) as conn:
        assert conn.execute("SELECT MAX(number) FROM _migrations").fetchone() == (1,)


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


def test_line_chart_skips_missing_points() -> None:
    points: list[tuple[float, float | None]] = [(0, 1.0), (1, None), (2, math.nan), (3, 2.0)]
    chart = line_chart("a", [Series("a", points, "#000")], x_label="x")
    assert [dot.tip for dot in chart.series[0].dots] == ["a at 0: 1", "a at 3: 2"]
    assert not line_chart("empty", [Series("a", [(0, None)], "#000")], x_label="x").series


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
