"""`trustee eval sim` (held-out simulated benchmark) and `trustee eval compare`, over loopback HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from trustee_rl.cli import app
from trustee_rl.evaluate.results import ItemKey, ResultCache, update_summary
from trustee_rl.evaluate.simbench import first_turn, tasks_label
from trustee_rl.schema import Episode, Message, ToolCall
from trustee_rl.seeding import derive_seed
from trustee_rl.sim.catalog import load_catalog
from trustee_rl.store import RunStore
from trustee_rl.task_files import load_task_file
from trustee_rl.testing.openai_server import AgentResponder, LoopbackOpenAIServer, Reply

from .conftest import make_task

runner = CliRunner()


@pytest.fixture
def server() -> Any:
    with LoopbackOpenAIServer(AgentResponder(seed=0)) as running:
        yield running


def eval_sim(server_url: str, model: str, tasks: Path, out: Path, *extra: str) -> Any:
    args = ["eval", "sim", "--model", model, "--tasks", str(tasks), "--simulator", server_url,
            "--out", str(out), "--json", *extra]  # fmt: skip
    return runner.invoke(app, args)


def test_sim_benchmark_freezes_held_out_tasks_and_scores_whole_episodes(
    server: LoopbackOpenAIServer, tmp_path: Path
) -> None:
    tasks = tmp_path / "tasks.jsonl"
    first = eval_sim(server.base_url, server.base_url, tasks, tmp_path / "a", "--n", "4")
    assert first.exit_code == 0, first.output
    frozen = load_task_file(tasks)
    assert len(frozen) == 4
    _, held_out = load_catalog().split(0.2, 0)
    held_out_tools = {tool.name for domain in held_out.domains for tool in domain.tools}
    assert all(call.name in held_out_tools for t in frozen for call in t.expected_calls)

    figures = json.loads(first.stdout)
    assert figures["episodes"] == 4 and figures["unscored"] == 0
    scores = figures["scores"]
    assert 0.0 <= scores["success rate"] <= 1.0
    assert -1.0 <= scores["mean reward"] <= 1.0
    assert any(name.startswith("criterion ") for name in scores)
    # The first turn graded as training's held-out check grades it: the loopback agent opens
    # every episode with a call to one of the offered tools.
    assert scores["first turn any call"] == 1.0
    assert {"first turn valid call", "first turn right tool"} <= set(scores)

    # The same frozen tasks and seed give the same figures, from the cache the second time.
    again = eval_sim(server.base_url, server.base_url, tasks, tmp_path / "a")
    assert json.loads(again.stdout)["scores"] == scores
    # Another model on the same file sees the same tasks.
    other = eval_sim(server.base_url, server.base_url, tasks, tmp_path / "b", "--seed", "5")
    assert other.exit_code == 0, other.output
    assert load_task_file(tasks) == frozen

    # Compare pairs the two on the same frozen tasks, from the episodes each dir cached.
    args = ["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--plot",
            str(tmp_path / "chart.svg"), "--json"]  # fmt: skip
    compared = runner.invoke(app, args)
    assert compared.exit_code == 0, compared.output
    success = next(r for r in json.loads(compared.stdout)["rows"] if r["metric"] == "success rate")
    assert success["n"] == [4, 4] and success["intervals"][0]["method"] == "wilson"
    assert success["tests"][1]["test"] == "mcnemar" and success["tests"][1]["paired"] == 4
    rows = {r["metric"]: r for r in json.loads(compared.stdout)["rows"]}
    assert rows["first turn right tool"]["n"] == [4, 4]
    assert rows["first turn right tool"]["tests"][1]["paired"] == 4


def test_sim_benchmark_needs_tasks_or_a_count(server: LoopbackOpenAIServer, tmp_path: Path) -> None:
    result = eval_sim(server.base_url, server.base_url, tmp_path / "none.jsonl", tmp_path / "o")
    assert result.exit_code == 2
    assert "pass --n" in result.output


def test_sim_benchmark_rejects_an_unreachable_model(tmp_path: Path) -> None:
    with LoopbackOpenAIServer(lambda request: Reply(status=503)) as broken:
        url = broken.base_url
    tasks = tmp_path / "t.jsonl"
    result = eval_sim(url, url, tasks, tmp_path / "o", "--n", "1")
    assert result.exit_code == 2
    assert "cannot reach" in result.output.splitlines()[-1]
    assert not tasks.exists()  # nothing half-written


def test_compare_puts_models_side_by_side_across_benchmarks(tmp_path: Path) -> None:
    base, trained = tmp_path / "base", tmp_path / "trained"
    update_summary(base, "embedded", "bfcl", {"scores": {"simple_python": 0.1, "multiple": 0.0}})
    update_summary(base, "embedded", "sim", {"scores": {"success rate": 0.25, "mean reward": -0.5}})
    update_summary(trained, "run/final#1", "bfcl", {"scores": {"simple_python": 0.3}})
    update_summary(trained, "run/final#1", "tau2", {"scores": {"airline pass^1": 0.02}})
    chart = tmp_path / "chart.svg"
    result = runner.invoke(
        app, ["eval", "compare", str(base), str(trained), "--plot", str(chart), "--json"]
    )
    assert result.exit_code == 0, result.output
    table = json.loads(result.stdout)
    assert table["models"] == ["embedded", "run/final#1"]
    rows = {(r["benchmark"], r["metric"]): r["values"] for r in table["rows"]}
    assert rows == {
        ("sim", "success rate"): [0.25, None],
        ("sim", "mean reward"): [-0.5, None],
        ("bfcl", "simple_python"): [0.1, 0.3],
        ("bfcl", "multiple"): [0.0, None],
        ("tau2", "airline pass^1"): [None, 0.02],
    }
    svg = chart.read_text()
    assert svg.startswith("<svg") and svg.count("<rect") >= 1 + 2 + 6  # background, legend, bars
    assert "embedded: 10.0%" in svg and "run/final#1: 30.0%" in svg

    printed = runner.invoke(app, ["eval", "compare", str(base), str(trained), "--plot", str(chart)])
    assert "simple_python" in printed.output and "30.0%" in printed.output


def test_compare_refuses_a_dir_without_results(tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", "compare", str(tmp_path)])
    assert result.exit_code == 2
    assert "has no summary.json" in result.output


def test_one_output_dir_holds_one_model(tmp_path: Path) -> None:
    update_summary(tmp_path, "a", "bfcl", {"scores": {}})
    with pytest.raises(ValueError, match="holds results of 'a'"):
        update_summary(tmp_path, "b", "bfcl", {"scores": {}})


def test_sim_benchmark_plays_the_held_out_tasks_a_training_run_froze(
    server: LoopbackOpenAIServer, tmp_path: Path
) -> None:
    tasks = tmp_path / "tasks.jsonl"
    written = eval_sim(server.base_url, server.base_url, tasks, tmp_path / "file", "--n", "2")
    assert written.exit_code == 0, written.output
    run = tmp_path / "run"
    with RunStore.create(run, {"seed": 0}) as store:
        store.freeze_heldout_tasks(load_task_file(tasks))

    args = ["eval", "sim", "--model", server.base_url, "--run-dir", str(run),
            "--simulator", server.base_url, "--out", str(tmp_path / "run-eval"), "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["tasks"] == tasks_label(load_task_file(tasks))
    assert figures["scores"] == json.loads(written.stdout)["scores"]  # the same tasks and seed

    both = runner.invoke(app, [*args, "--tasks", str(tasks)])
    assert both.exit_code == 2 and "--run-dir RUN" in both.output
    more = runner.invoke(app, [*args, "--n", "3"])
    assert more.exit_code == 2 and "frozen already" in more.output
    with RunStore.create(tmp_path / "bare", {"seed": 0}):
        pass
    bare = runner.invoke(app, [*args[:5], str(tmp_path / "bare"), *args[6:]])
    assert bare.exit_code == 2 and "holds no held-out tasks" in bare.output


def test_eval_settings_come_from_a_file_flags_and_set_in_that_order(
    server: LoopbackOpenAIServer, tmp_path: Path
) -> None:
    tasks = tmp_path / "tasks.jsonl"
    config = tmp_path / "eval.yaml"
    config.write_text(
        f"model: {server.base_url}\nsimulator: {server.base_url}\ntasks: {tasks}\n"
        f"n: 2\nseed: 3\nout: {tmp_path / 'from-file'}\nconcurrency: 1\n"
    )
    args = ["eval", "sim", "--config", str(config), "--out", str(tmp_path / "from-flag"),
            "--seed", "4", "--set", "seed=5", "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "from-file").exists()  # the flag beat the file
    episodes = ResultCache(tmp_path / "from-flag")
    try:
        frozen = load_task_file(tasks)
        key = ItemKey(tasks_label(frozen), frozen[0].id)
        hit = episodes.get(f"default@{server.base_url}", "sim", key)
    finally:
        episodes.close()
    assert hit is not None
    assert hit.record["episode"]["seed"] == derive_seed(5, "eval-sim", 0)  # --set beat the flag

    unknown = runner.invoke(app, ["eval", "sim", "--config", str(config), "--set", "temperature=1"])
    assert unknown.exit_code == 2 and "invalid configuration: temperature" in unknown.output
    bad = runner.invoke(app, ["eval", "bfcl", "--model", "embedded", "--set", "max_tokens=0"])
    assert bad.exit_code == 2 and "max_tokens" in bad.output


def test_compare_takes_its_dirs_from_a_config_file(tmp_path: Path) -> None:
    update_summary(tmp_path / "a", "embedded", "sim", {"scores": {"success rate": 0.5}})
    config = tmp_path / "compare.yaml"
    config.write_text(f"dirs: [{tmp_path / 'a'}]\nplot: null\n")
    result = runner.invoke(app, ["eval", "compare", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    # A summary without a results cache: the figure, without items to put an interval on.
    assert json.loads(result.stdout)["rows"] == [
        {"benchmark": "sim", "metric": "success rate", "values": [0.5], "n": [None],
         "intervals": [None], "tests": [None], "notes": []}
    ]  # fmt: skip
    assert "chart:" not in result.stderr


def test_the_first_turn_is_graded_by_its_first_call() -> None:
    task = make_task()
    wrong = ToolCall(name="get_weather", arguments={"town": "Oslo"})
    right = ToolCall(name="get_weather", arguments={"city": "Oslo"})
    episode = Episode(
        id="e", task_id=task.id, index=0, seed=0, policy_model="m", status="done",
        messages=[
            Message(role="system", content=task.system_prompt),
            Message(role="user", content=task.initial_message),
            Message(role="assistant", tool_calls=[wrong]),
            Message(role="tool", tool_call_id="c", name="get_weather", content="{}"),
            Message(role="assistant", tool_calls=[right]),
        ],
    )  # fmt: skip
    graded = first_turn(task, episode)
    assert (graded.any_call, graded.valid_call, graded.right_tool) == (True, False, True)
