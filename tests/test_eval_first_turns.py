"""`trustee eval sim --first-turns` (first replies graded as training's held-out check grades
them, no simulator) and `--max-level` (new tasks spread over difficulty as training's held-out set)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from trustee_rl.cli import app
from trustee_rl.environment import Environment
from trustee_rl.evaluate.results import ItemKey, ResultCache
from trustee_rl.evaluate.simbench import first_turn_metric, tasks_label
from trustee_rl.heldout import RATES, first_reply_scores, problem_counts
from trustee_rl.lm import open_lm
from trustee_rl.policy.transformers import TransformersPolicy
from trustee_rl.runner import HELDOUT, LEVEL_BUCKETS, SpreadTaskSource
from trustee_rl.schema import Message, Task
from trustee_rl.sim.catalog import load_catalog
from trustee_rl.task_files import load_task_file, write_task_file
from trustee_rl.testing.openai_server import AgentResponder, LoopbackOpenAIServer
from trustee_rl.train.config import load_train_config

from .conftest import make_task

runner = CliRunner()
# Few enough for a fast test, and for no call to close: the embedded base model writes text.
MAX_TOKENS = "16"


@pytest.fixture
def server() -> Any:
    with LoopbackOpenAIServer(AgentResponder(seed=0)) as running:
        yield running


def eval_sim(model: str, tasks: Path, out: Path, *extra: str) -> Any:
    args = ["eval", "sim", "--model", model, "--tasks", str(tasks), "--out", str(out), "--json",
            *extra]  # fmt: skip
    return runner.invoke(app, args)


def weather_tasks(path: Path) -> list[Task]:
    """Three tasks a call answers and one no offered tool fits (declining is the right move), so
    the rates differ from one another."""
    asks = ["What's the weather in Oslo?", "Weather in Paris, in celsius.", "Is it cold in Rome?"]
    tasks = [make_task(id=f"weather-{i}", initial_message=ask) for i, ask in enumerate(asks)]
    tasks.append(make_task(id="no-fit", initial_message="Book me a taxi.", expected_calls=[]))
    write_task_file(path, tasks)
    return tasks


def cached(out: Path, model: str, tasks: list[Task]) -> dict[str, Any]:
    cache = ResultCache(out)
    try:
        hits = {
            task.id: cache.get(model, "sim", ItemKey(tasks_label(tasks), task.id)) for task in tasks
        }
    finally:
        cache.close()
    assert all(hit is not None for hit in hits.values())
    return {task_id: hit for task_id, hit in hits.items() if hit is not None}


def test_first_turns_of_the_embedded_model_are_graded_as_training_grades_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: LoopbackOpenAIServer
) -> None:
    tasks = weather_tasks(tmp_path / "tasks.jsonl")
    first = eval_sim("embedded", tmp_path / "tasks.jsonl", tmp_path / "base", "--first-turns",
                     "--max-tokens", MAX_TOKENS)  # fmt: skip
    assert first.exit_code == 0, first.output
    figures = json.loads(first.stdout)

    # (a) The figures are training's held-out grades of the replies the cache keeps.
    hits = cached(tmp_path / "base", "embedded", tasks)
    replies = [Message.model_validate(hits[task.id].record["reply"]) for task in tasks]
    regraded = first_reply_scores(tasks, replies)
    assert figures["scores"] == {first_turn_metric(name): getattr(regraded, name) for name in RATES}
    assert figures["scores"]["first turn right tool"] == 0.25  # only declining the taxi is right
    assert figures["replies"] == 4 and figures["tasks"] == tasks_label(tasks)
    assert figures["problems"] == problem_counts(regraded) == {"no call": 4}
    assert set(figures["intervals"]) == set(figures["scores"])
    valid = figures["intervals"]["first turn valid call"]
    assert valid["method"] == "wilson" and valid["low"] == 0.0 and 0.4 < valid["high"] < 0.6
    for task, outcome in zip(tasks, regraded.per_task, strict=True):
        record = hits[task.id].record
        assert record["first_turn"] == outcome.model_dump(mode="json")
        assert hits[task.id].score == float(outcome.valid_call)

    # (b) A second run into the same dir generates nothing: every reply comes from the cache.
    # Nor does first-turn mode open a simulator for tasks that exist.
    async def no_generation(self: TransformersPolicy, conversations: Any) -> list[Message]:
        raise AssertionError("the model was asked for a reply the cache holds")

    def no_simulator(*args: Any) -> None:
        raise AssertionError("a simulator was opened")

    monkeypatch.setattr(TransformersPolicy, "act", no_generation)
    monkeypatch.setattr("trustee_rl.lm.open_lm", no_simulator)
    again = eval_sim("embedded", tmp_path / "tasks.jsonl", tmp_path / "base", "--first-turns",
                     "--max-tokens", MAX_TOKENS)  # fmt: skip
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["scores"] == figures["scores"]

    # Compare pairs another model's first replies with these, task by task.
    other = eval_sim(server.base_url, tmp_path / "tasks.jsonl", tmp_path / "other", "--first-turns")
    assert other.exit_code == 0, other.output
    compared = runner.invoke(app, ["eval", "compare", str(tmp_path / "base"),
                                   str(tmp_path / "other"), "--plot", str(tmp_path / "c.svg"),
                                   "--json"])  # fmt: skip
    assert compared.exit_code == 0, compared.output
    rows = {row["metric"]: row for row in json.loads(compared.stdout)["rows"]}
    valid_row = rows["first turn valid call"]
    assert valid_row["n"] == [4, 4] and valid_row["tests"][1]["paired"] == 4
    assert valid_row["tests"][1]["test"] == "mcnemar"


def test_whole_episode_and_first_turn_results_never_share_an_output_dir(
    server: LoopbackOpenAIServer, tmp_path: Path
) -> None:
    url, tasks = server.base_url, tmp_path / "tasks.jsonl"
    episodes = eval_sim(url, tasks, tmp_path / "episodes", "--simulator", url, "--n", "2")
    assert episodes.exit_code == 0, episodes.output

    mixed = eval_sim(url, tasks, tmp_path / "episodes", "--first-turns")
    assert mixed.exit_code == 2
    assert "mode None, not 'first turns': use another --out" in mixed.output

    first = eval_sim(url, tasks, tmp_path / "first", "--first-turns")
    assert first.exit_code == 0, first.output
    back = eval_sim(url, tasks, tmp_path / "first", "--simulator", url)
    assert back.exit_code == 2
    assert "mode 'first turns', not None: use another --out" in back.output
    # Each dir still holds its own figures.
    summaries = {
        d: json.loads((tmp_path / d / "summary.json").read_text()) for d in ("episodes", "first")
    }
    assert "success rate" in summaries["episodes"]["benchmarks"]["sim"]["scores"]
    assert summaries["first"]["benchmarks"]["sim"]["replies"] == 2


def test_level_and_max_level_are_one_or_the_other(tmp_path: Path) -> None:
    both = eval_sim("embedded", tmp_path / "t.jsonl", tmp_path / "o", "--n", "2", "--level", "5",
                    "--max-level", "30")  # fmt: skip
    assert both.exit_code == 2
    assert both.output.strip().splitlines() == [
        "error: --level writes new tasks at one difficulty, --max-level spreads them: give one"
    ]
    config = tmp_path / "eval.yaml"
    config.write_text("level: 5\n")
    from_file = eval_sim("embedded", tmp_path / "t.jsonl", tmp_path / "o", "--n", "2",
                         "--max-level", "30", "--config", str(config))  # fmt: skip
    assert from_file.exit_code == 2 and "give one" in from_file.output
    assert not (tmp_path / "t.jsonl").exists()


def test_max_level_spreads_new_tasks_over_difficulty_as_training_does(
    server: LoopbackOpenAIServer, tmp_path: Path
) -> None:
    url = server.base_url
    run = load_train_config("cpu")
    args = ["--first-turns", "--simulator", url, "--max-level", f"{run.eval.max_level:g}",
            "--seed", str(run.eval.seed), "--split-seed", str(run.seed),
            "--set", f"taskgen.request_writer={run.taskgen.request_writer}"]  # fmt: skip
    written = eval_sim(url, tmp_path / "tasks.jsonl", tmp_path / "out", "--n", "10", *args)
    assert written.exit_code == 0, written.output
    tasks = load_task_file(tmp_path / "tasks.jsonl")
    bucket_levels = [
        1 + (run.eval.max_level - 1) * bucket / (LEVEL_BUCKETS - 1)
        for bucket in range(LEVEL_BUCKETS)
    ]
    assert [task.difficulty.level for task in tasks] == pytest.approx(
        bucket_levels + bucket_levels[:2]
    )

    # Under a run's held-out seed, catalog split and task settings, the tasks begin with the ones
    # that run freezes (drawn here as training draws them), so more of them hold its set.
    async def frozen_by_training() -> list[Task]:
        _, held_out = load_catalog().split(run.eval.holdout_fraction, run.seed)
        environment = Environment(open_lm(url), held_out, run.judge, run.taskgen)
        source = SpreadTaskSource(
            environment, run.curriculum, run.eval.seed, HELDOUT, run.eval.max_level
        )
        return await source.draw_many(LEVEL_BUCKETS)

    assert tasks[:LEVEL_BUCKETS] == asyncio.run(frozen_by_training())
