"""Held-out stage scores with their intervals, and each stage tested against the one before on the
same frozen tasks: as graded, as stored, in the report and in `trustee train`'s closing table."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustee_rl.cli.train import _print_stages
from trustee_rl.heldout import (
    first_reply_scores,
    format_scores,
    problem_counts,
    score_intervals,
    stage_tests,
)
from trustee_rl.report import build_report
from trustee_rl.schema import HeldoutScores, Message, StageRecord, ToolCall
from trustee_rl.stats import McNemar, PairedBootstrap
from trustee_rl.store import RunStore

from .conftest import make_task

TASKS = [make_task(id=f"held_{i:02d}") for i in range(20)]


def replies(calling: range) -> list[Message]:
    """The right call to the tasks in `calling`, plain text to the others."""
    call = ToolCall(name="get_weather", arguments={"city": "Oslo"})
    return [
        Message(role="assistant", tool_calls=[call])
        if i in calling
        else Message(role="assistant", content="It is sunny.")
        for i in range(len(TASKS))
    ]


# base calls on tasks 0-3; grpo stops on 0-1 and starts on 4-13: McNemar b=2, c=10.
BASE = first_reply_scores(TASKS, replies(range(4)))
GRPO = first_reply_scores(TASKS, replies(range(2, 14)))


def test_first_replies_are_kept_per_task() -> None:
    assert (BASE.tasks, BASE.any_call, GRPO.any_call) == (20, 0.2, 0.6)
    assert [o.task_id for o in BASE.per_task] == [t.id for t in TASKS]
    assert [o.any_call for o in BASE.per_task] == [i < 4 for i in range(20)]
    assert GRPO.per_task[5].valid_call and GRPO.per_task[5].right_tool
    assert GRPO.per_task[5].argument_accuracy == 1.0 and GRPO.per_task[0].argument_accuracy == 0.0


def test_each_rate_has_its_interval() -> None:
    intervals = score_intervals(BASE)
    low, high = intervals["any_call"]
    assert (round(100 * low, 1), round(100 * high, 1)) == (8.1, 41.6)  # Wilson, 4 of 20
    assert intervals["any_call"] == intervals["right_tool"] == intervals["valid_call"]
    assert intervals["argument_accuracy"].low < 0.2 < intervals["argument_accuracy"].high


def test_consecutive_stages_are_tested_on_the_same_tasks() -> None:
    tested = stage_tests(BASE, GRPO)
    assert tested is not None and tested.paired == 20
    any_call = tested.tests["any_call"]
    assert isinstance(any_call, McNemar)
    assert (any_call.b, any_call.c) == (2, 10)
    assert any_call.p == pytest.approx(2 * (1 + 12 + 66) / 2**12)
    accuracy = tested.tests["argument_accuracy"]
    assert isinstance(accuracy, PairedBootstrap)
    assert accuracy.difference == pytest.approx(0.4)


def test_records_kept_before_per_task_outcomes_still_load() -> None:
    """A stage as stored before per-task outcomes were kept: Wilson intervals from the rates and
    the task count, and no test, which needs the tasks."""
    old = StageRecord.model_validate_json(
        '{"name": "base", "scores": {"tasks": 2, "any_call": 0.5, "valid_call": 0.0,'
        ' "right_tool": 0.5, "argument_accuracy": 0.1}, "training": {}, "wall_s": 3.5}'
    )
    assert old.scores is not None and old.scores.per_task == []
    intervals = score_intervals(old.scores)
    assert set(intervals) == {"any_call", "valid_call", "right_tool"}
    assert (
        round(100 * intervals["any_call"].low, 1),
        round(100 * intervals["any_call"].high, 1),
    ) == (
        9.5,
        90.5,
    )
    assert stage_tests(old.scores, GRPO) is None


def save_stages(run_dir: Path, *stages: tuple[str, HeldoutScores]) -> None:
    with RunStore.create(run_dir, {"seed": 0}) as store:
        store.freeze_heldout_tasks(TASKS)
        for name, scores in stages:
            store.save_stage(StageRecord.model_validate({"name": name, "scores": scores}))


def test_the_report_shows_intervals_and_the_test_against_the_stage_before(tmp_path: Path) -> None:
    save_stages(tmp_path / "run", ("base", BASE), ("grpo", GRPO))
    with RunStore.open(tmp_path / "run", readonly=True) as store:
        assert store.stages()["grpo"].scores == GRPO  # per-task outcomes survive the store
    html = build_report(tmp_path / "run")
    base_row, grpo_row = html.split('<tr class="stage">')[1:3]
    assert "20.0% <span" in base_row and "[8.1, 41.6]" in base_row and "p=" not in base_row
    assert "60.0%" in grpo_row and "[38.7, 78.1]" in grpo_row
    assert "p=0.039" in grpo_row
    assert "McNemar exact on 20 tasks: 10 passed only now, 2 only before" in grpo_row


def test_train_prints_intervals_and_tests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # so rich wraps no cell
    stages = {
        "base": StageRecord(name="base", scores=BASE),
        "grpo": StageRecord(name="grpo", scores=GRPO),
    }
    _print_stages(stages, tmp_path)
    printed = capsys.readouterr().out
    assert "20.0% [8.1, 41.6]" in printed and "60.0% [38.7, 78.1]" in printed
    assert "20 paired" in printed and "p=0.039 (+10/−2)" in printed


def test_where_no_offered_tool_fits_declining_is_the_right_first_move() -> None:
    unanswerable = [
        make_task(id=f"nofit_{i}", expected_calls=[], private_facts={}) for i in range(2)
    ]
    call = ToolCall(name="get_weather", arguments={"city": "Oslo"})
    scores = first_reply_scores(
        unanswerable,
        [
            Message(role="assistant", content="None of my tools can do that."),
            Message(role="assistant", tool_calls=[call]),
        ],
    )
    declined, called = scores.per_task
    assert (declined.right_tool, declined.argument_accuracy, declined.any_call) == (
        True,
        1.0,
        False,
    )
    assert (called.right_tool, called.argument_accuracy, called.valid_call) == (False, 0.0, True)


def test_a_first_reply_is_graded_by_its_first_call_alone() -> None:
    task = make_task(id="first_call")
    right = ToolCall(name="get_weather", arguments={"city": "Oslo"})
    invalid = ToolCall(name="get_weather", arguments={"town": 3})
    unknown = ToolCall(name="book_flight", arguments={})
    scores = first_reply_scores(
        [task, task, task],
        [
            # What follows the first call is not read: a policy stopped where it closed.
            Message(role="assistant", tool_calls=[right, invalid]),
            Message(role="assistant", tool_calls=[invalid, right]),
            Message(role="assistant", tool_calls=[unknown, right]),
        ],
    )
    first, second, third = scores.per_task
    assert (first.valid_call, first.right_tool, first.argument_accuracy) == (True, True, 1.0)
    assert (second.valid_call, second.right_tool, second.argument_accuracy) == (False, True, 0.0)
    assert (third.valid_call, third.right_tool, third.argument_accuracy) == (False, False, 0.0)


def test_replies_without_a_valid_call_are_counted_by_what_went_wrong() -> None:
    task = make_task(id="problems")
    calls = [
        ToolCall(name="get_weather", arguments={"city": "Oslo"}),
        ToolCall(name="get_weather", arguments={"city": 3}),
        ToolCall(name="get_weather", arguments={"town": "Oslo"}),
        ToolCall(name="get_weather", arguments={"city": "Oslo", "when": "now"}),
        ToolCall(name="book_flight", arguments={}),
        ToolCall(name="get_weather", arguments={}, parse_error="Expecting ',' delimiter"),
    ]
    scores = first_reply_scores(
        [task] * 8,
        [Message(role="assistant", tool_calls=[call]) for call in calls]
        + [Message(role="assistant", content="It is sunny.")] * 2,
    )
    assert [o.call_problem is None for o in scores.per_task] == [True] + [False] * 7
    assert problem_counts(scores) == {
        "no call": 2,
        "missing argument": 1,  # "town" is not a parameter, and "city" is required
        "argument of the wrong type": 1,
        "unexpected argument": 1,
        "unknown tool": 1,
        "unparsable call": 1,
    }
    assert "no valid call: no call 2, " in format_scores(scores)
