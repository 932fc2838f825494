"""`trustee eval compare` with statistics: each figure's interval from the items the harness
cached, and each model tested against the first on the items both scored.

Two output dirs are written by the real harness playing the real simulated benchmark, with only
the episodes scripted (which tasks each model passes), so the expected figures are known exactly.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, cast

import pytest
from typer.testing import CliRunner

from trustee_rl.cli import app
from trustee_rl.environment import Environment
from trustee_rl.evaluate.harness import CategoryResults, Item, Scored, Unscored, run_benchmark
from trustee_rl.evaluate.results import ItemKey, Result, ResultCache, update_summary
from trustee_rl.evaluate.simbench import SimBenchmark
from trustee_rl.policy.base import Conversation, Policy
from trustee_rl.schema import CriterionResult, Episode, Message, Task, Verdict

from .conftest import make_task

runner = CliRunner()
TASKS = [make_task(id=f"task_{i:02d}") for i in range(30)]
PARTIAL = 0.25  # the reward of a failed episode


class Named:
    """A policy that is only a name: the scripted benchmark never asks it anything."""

    trainable = False

    def __init__(self, name: str) -> None:
        self.name = name

    async def act(self, conversations: Sequence[Conversation]) -> list[Message]:
        raise AssertionError("the scripted benchmark plays no turn")

    async def aclose(self) -> None:
        pass


class ScriptedSim:
    """The simulated benchmark with each episode's reward given (None: the judge could not score
    it, so nothing is cached); its items, figures, and the harness and cache are the real ones."""

    name = "sim"
    concurrency = 4

    def __init__(self, tasks: list[Task], rewards: dict[str, float | None]) -> None:
        # The environment only plays episodes, which this benchmark scripts.
        self.real = SimBenchmark(tasks, cast(Environment, None), seed=0)
        self.settings: dict[str, Any] = {}  # no judge: the verdicts are scripted
        self.rewards = rewards

    def items(self) -> list[Item[tuple[int, Task]]]:
        return self.real.items()

    def session(self) -> AbstractAsyncContextManager[None]:
        return self.real.session()

    async def play(self, item: Item[tuple[int, Task]], policy: Policy) -> tuple[Episode, Verdict]:
        index, task = item.data
        reward = self.rewards[task.id]
        episode = Episode(id=f"{policy.name}-{index}", task_id=task.id, index=index, seed=0,
                          policy_model=policy.name, status="done")  # fmt: skip
        passed = reward is not None and reward >= 1.0
        criterion = CriterionResult(
            name="goal", passed=passed, reason="scripted", source="rule", score=float(passed)
        )
        verdict = Verdict(episode_id=episode.id, scored=reward is not None, reward=reward,
                          criteria=[criterion], judge_model="rules", prompt_version="test")  # fmt: skip
        return episode, verdict

    async def score(
        self, item: Item[tuple[int, Task]], outcome: tuple[Episode, Verdict]
    ) -> Scored | Unscored:
        if outcome[1].reward is None:
            return Unscored("scripted")
        return await self.real.score(item, outcome)

    def category_figures(self, results: CategoryResults) -> dict[str, Any]:
        return self.real.category_figures(results)

    def figures(self, categories: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return self.real.figures(categories)


def evaluate(
    out: Path,
    model: str,
    passed: set[int],
    unscored: set[int] | None = None,
    tasks: list[Task] = TASKS,
) -> None:
    rewards = {
        task.id: None if i in (unscored or set()) else 1.0 if i in passed else PARTIAL
        for i, task in enumerate(tasks)
    }
    benchmark = ScriptedSim(tasks, rewards)
    asyncio.run(run_benchmark(benchmark, Named(model), out, progress=lambda *_: None))


def two_models(tmp_path: Path) -> tuple[Path, Path]:
    """base passes tasks 0-9 and was not scored on 29; tuned passes 0-7 and 10-18. On the 29
    tasks both scored, 2 only base passes and 9 only tuned passes: McNemar p = 2·67/2¹¹."""
    base, tuned = tmp_path / "base", tmp_path / "tuned"
    evaluate(base, "base", set(range(10)), unscored={29})
    evaluate(tuned, "tuned", set(range(8)) | set(range(10, 19)))
    return base, tuned


def compare(*dirs: Path, chart: Path, as_json: bool = True) -> Any:
    args = ["eval", "compare", *map(str, dirs), "--plot", str(chart)]
    # Wide enough that rich wraps no cell of the table.
    result = runner.invoke(app, args + ["--json"] * as_json, env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout) if as_json else result.output


def test_compare_gives_each_rate_its_wilson_interval_and_a_mcnemar_test(tmp_path: Path) -> None:
    base, tuned = two_models(tmp_path)
    table = compare(base, tuned, chart=tmp_path / "chart.svg")
    assert table["models"] == ["base", "tuned"] and table["confidence"] == 0.95
    rows = {row["metric"]: row for row in table["rows"]}

    success = rows["success rate"]
    assert success["values"] == [10 / 29, 17 / 30]
    assert success["n"] == [29, 30]
    first, second = success["intervals"]
    assert first["method"] == second["method"] == "wilson"
    assert (round(100 * first["low"], 1), round(100 * first["high"], 1)) == (19.9, 52.7)
    assert (round(100 * second["low"], 1), round(100 * second["high"], 1)) == (39.2, 72.6)
    test = success["tests"][1]
    assert success["tests"][0] is None
    assert test["test"] == "mcnemar" and (test["b"], test["c"]) == (2, 9)
    assert test["p"] == 2 * 67 / 2**11
    assert (test["paired"], test["only_first"], test["only_this"]) == (29, 0, 1)
    assert rows["criterion goal"]["tests"][1]["p"] == test["p"]  # the same passes, judged per rule

    reward = rows["mean reward"]
    assert [interval["method"] for interval in reward["intervals"]] == ["bootstrap"] * 2
    low, high = reward["intervals"][0]["low"], reward["intervals"][0]["high"]
    assert low < reward["values"][0] < high
    boot = reward["tests"][1]
    assert boot["test"] == "paired bootstrap" and boot["paired"] == 29
    assert boot["difference"] == (9 - 2) * (1.0 - PARTIAL) / 29
    assert boot["interval"][0] < boot["difference"] < boot["interval"][1]
    assert 0.0 < boot["p"] < 0.05
    again = compare(base, tuned, chart=tmp_path / "chart.svg")
    assert again["rows"] == table["rows"]  # the bootstrap is seeded


def test_the_compare_table_and_chart_show_intervals_and_p_values(tmp_path: Path) -> None:
    base, tuned = two_models(tmp_path)
    chart = tmp_path / "chart.svg"
    printed = compare(base, tuned, chart=chart, as_json=False)
    success = next(line for line in printed.splitlines() if "success rate" in line)
    assert "34.5% [19.9, 52.7] n=29" in success
    assert "56.7% [39.2, 72.6] n=30" in success
    assert "p=0.065 +9/−2 of 29, 1 unpaired" in success
    reward = next(line for line in printed.splitlines() if "mean reward" in line)
    assert "Δ+0.181" in reward and "of 29, 1 unpaired" in reward
    assert "McNemar" in printed  # the caption says what the tests are

    svg = chart.read_text()
    assert "base: 34.5% [19.9%, 52.7%]" in svg
    assert "tuned: 56.7% [39.2%, 72.6%] p=0.065" in svg
    # A whisker per model on each row: success, reward, the criterion and the 4 first-turn rates.
    assert svg.count("<path") == 7 * 2


def test_items_only_one_model_scored_are_left_out_and_counted(tmp_path: Path) -> None:
    base, _ = two_models(tmp_path)
    # Other frozen tasks make another task set, with nothing in common with base's.
    other = tmp_path / "other"
    evaluate(other, "other", {0}, tasks=[make_task(id=f"other_{i}") for i in range(3)])
    table = compare(base, other, chart=tmp_path / "chart.svg")
    test = next(row for row in table["rows"] if row["metric"] == "success rate")["tests"][1]
    assert test == {"paired": 0, "only_first": 29, "only_this": 3, "test": None, "p": None}
    printed = compare(base, other, chart=tmp_path / "chart.svg", as_json=False)
    assert "no item in common, 32 unpaired" in printed


def test_figures_without_cached_items_have_no_interval(tmp_path: Path) -> None:
    """A dir whose cache is gone (or an old summary) still compares, without statistics."""
    base, tuned = two_models(tmp_path)
    (tuned / "results.sqlite").unlink()
    table = compare(base, tuned, chart=tmp_path / "chart.svg")
    success = next(row for row in table["rows"] if row["metric"] == "success rate")
    assert success["n"] == [29, None]
    assert success["intervals"][0] is not None and success["intervals"][1] is None
    assert success["tests"] == [None, None]


def write_results(out: Path, model: str, benchmark: str, scores: dict[tuple[str, str, int], float],
                  figures: dict[str, Any]) -> None:  # fmt: skip
    """An output dir as the harness leaves it, written with the cache's and summary's writers."""
    cache = ResultCache(out)
    try:
        for (category, entry, trial), score in scores.items():
            cache.put(model, benchmark, Result(ItemKey(category, entry, trial), score, {}))
    finally:
        cache.close()
    update_summary(out, model, benchmark, figures)


def test_tau2_tasks_are_the_items_and_their_trials_make_pass_hat_k(tmp_path: Path) -> None:
    # Two trials a task. a: t0 passes both, t1 one, t2 and t3 none; b: t0, t1 both, t2 one, and
    # t3 was never scored.
    a = {("airline", "t0", 0): 1.0, ("airline", "t0", 1): 1.0, ("airline", "t1", 0): 1.0,
         ("airline", "t1", 1): 0.0, ("airline", "t2", 0): 0.0, ("airline", "t2", 1): 0.2,
         ("airline", "t3", 0): 0.0, ("airline", "t3", 1): 0.0}  # fmt: skip
    b = {("airline", "t0", 0): 1.0, ("airline", "t0", 1): 1.0, ("airline", "t1", 0): 1.0,
         ("airline", "t1", 1): 1.0, ("airline", "t2", 0): 1.0, ("airline", "t2", 1): 0.0}  # fmt: skip
    write_results(tmp_path / "a", "a", "tau2", a,
                  {"scores": {"airline pass^1": 1.5 / 4, "airline pass^2": 1 / 4}})  # fmt: skip
    write_results(tmp_path / "b", "b", "tau2", b,
                  {"scores": {"airline pass^1": 2.5 / 3, "airline pass^2": 2 / 3}})  # fmt: skip
    table = compare(tmp_path / "a", tmp_path / "b", chart=tmp_path / "chart.svg")
    rows = {row["metric"]: row for row in table["rows"]}

    pass_1 = rows["airline pass^1"]  # halves: a mean over tasks, bootstrapped
    assert pass_1["n"] == [4, 3] and pass_1["notes"] == []
    assert [i["method"] for i in pass_1["intervals"]] == ["bootstrap", "bootstrap"]
    test = pass_1["tests"][1]
    assert test["test"] == "paired bootstrap" and test["paired"] == 3 and test["only_first"] == 1
    assert test["difference"] == pytest.approx((0 + 0.5 + 0.5) / 3)

    pass_2 = rows["airline pass^2"]  # with k = trials each task passes or fails
    assert [i["method"] for i in pass_2["intervals"]] == ["wilson", "wilson"]
    test = pass_2["tests"][1]
    assert (test["test"], test["b"], test["c"], test["p"]) == ("mcnemar", 0, 1, 1.0)


def test_a_figure_that_is_not_the_mean_of_its_items_gets_no_interval(tmp_path: Path) -> None:
    """BFCL's live AST group pools its categories' entries (an interval); its hallucination group
    averages its categories' accuracies unweighted (no single interval; each category has one)."""
    live_ast = ["live_simple", "live_multiple", "live_parallel", "live_parallel_multiple"]
    relevance = {"irrelevance": 3, "live_irrelevance": 1, "live_relevance": 1}
    scores = {
        (category, f"{category}_{i}", 0): float(i == 0) for category in live_ast for i in range(2)
    }
    scores |= {
        (category, f"{category}_{i}", 0): 1.0 for category, n in relevance.items() for i in range(n)
    }
    scores[("irrelevance", "irrelevance_0", 0)] = 0.0
    figures = {"scores": {category: 0.5 for category in live_ast}
               | {"irrelevance": 2 / 3, "live_irrelevance": 1.0, "live_relevance": 1.0,
                  "live ast (overall)": 0.5, "hallucination (overall)": (2 / 3 + 1 + 1) / 3}}  # fmt: skip
    write_results(tmp_path / "m", "m", "bfcl", scores, figures)
    table = compare(tmp_path / "m", chart=tmp_path / "chart.svg")
    rows = {row["metric"]: row for row in table["rows"]}
    assert rows["live ast (overall)"]["n"] == [8]
    assert rows["live ast (overall)"]["intervals"][0]["method"] == "wilson"
    assert rows["irrelevance"]["intervals"][0]["method"] == "wilson"
    hallucination = rows["hallucination (overall)"]
    assert hallucination["n"] == [5] and hallucination["intervals"] == [None]
    assert "not the mean of its 5 cached items (80.0%)" in hallucination["notes"][0]
    printed = compare(tmp_path / "m", chart=tmp_path / "chart.svg", as_json=False)
    assert "note: bfcl hallucination (overall): m: 88.9% is not the mean" in printed


def test_a_broken_cache_is_named(tmp_path: Path) -> None:
    base, _ = two_models(tmp_path)
    (base / "results.sqlite").write_bytes(b"not a database, " * 64)
    result = runner.invoke(app, ["eval", "compare", str(base), "--plot", str(tmp_path / "c.svg")])
    assert result.exit_code == 2
    assert "not a readable evaluation cache" in result.output
