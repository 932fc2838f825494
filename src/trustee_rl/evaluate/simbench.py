"""A held-out simulated benchmark: whole episodes on frozen tasks, so every model sees the same ones.

The tasks come from a training run's store (the held-out set it froze before training) or from a
JSONL file, written once from catalog domains the run never trained on, at one difficulty or
spread over difficulty as training spreads its held-out set. Episodes are played against the
simulated user and tools and judged as in training. `FirstTurnBenchmark` reads the same tasks as
training's held-out check does: each task's first reply alone, graded by rules, no simulator call.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from trustee_rl.curriculum import Curriculum, CurriculumConfig
from trustee_rl.environment import Environment
from trustee_rl.evaluate.harness import CategoryResults, Item, Progress, Scored, run_benchmark
from trustee_rl.evaluate.results import ItemKey
from trustee_rl.heldout import (
    CHUNK,
    PASS_FAIL,
    RATES,
    first_reply_scores,
    opening,
    problem_counts,
    prompt_size,
    score_intervals,
    scores_of,
)
from trustee_rl.policy.base import Conversation, Policy
from trustee_rl.runner import HELDOUT, SpreadTaskSource, TaskSource, run_episode
from trustee_rl.schema import Episode, HeldoutOutcome, Message, Task, Verdict
from trustee_rl.seeding import derive_seed

BENCHMARK = "sim"
DEFAULT_CONCURRENCY = 8
DEFAULT_LEVEL = 1.0
# Every result records how it was played: whole-episode results carry no mode (as those cached
# before first-turn results existed), first-turn results this one. The harness refuses to resume
# an output dir's results under the other.
FIRST_TURNS = "first turns"


async def freeze_tasks(environment: Environment, count: int, seed: int, level: float) -> list[Task]:
    """`count` new tasks at difficulty `level` (aspects drawn as in training), from the held-out
    stream of `seed`. Raises SimulatorError when one cannot be written."""
    curriculum = Curriculum(CurriculumConfig(initial_level=level, mode="fixed"))
    return await TaskSource(environment, curriculum, seed, HELDOUT).draw_many(count)


async def freeze_spread_tasks(
    environment: Environment, count: int, seed: int, max_level: float
) -> list[Task]:
    """`count` new tasks spread evenly over difficulty 1..`max_level`, drawn as a training run
    draws its held-out set (runner.SpreadTaskSource): under the run's `eval.seed`, catalog split
    and `taskgen` (and default curriculum settings), the first tasks are that run's held-out
    tasks. Raises SimulatorError when one cannot be written."""
    source = SpreadTaskSource(environment, CurriculumConfig(), seed, HELDOUT, max_level)
    return await source.draw_many(count)


def tasks_label(tasks: list[Task]) -> str:
    """Names a frozen task set by its content, so results on different sets never mix."""
    digest = hashlib.sha256("".join(task.model_dump_json() for task in tasks).encode())
    return f"tasks-{digest.hexdigest()[:10]}"


class SimBenchmark:
    """Frozen tasks as a harness `Benchmark`: one category, the task set; one episode per task."""

    name = BENCHMARK

    def __init__(
        self,
        tasks: list[Task],
        environment: Environment,
        *,
        seed: int,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        if not tasks:
            raise ValueError("the simulated benchmark needs at least one frozen task")
        self.tasks = tasks
        self.environment = environment
        self.seed = seed
        self.concurrency = concurrency
        self.label = tasks_label(tasks)

    @property
    def settings(self) -> dict[str, Any]:
        # Results judged under another judge (mode, reward, weights) are other scores.
        return {"mode": None, "judge": self.environment.judge.config.model_dump(mode="json")}

    def items(self) -> list[Item[tuple[int, Task]]]:
        return [
            Item(ItemKey(self.label, task.id), (index, task))
            for index, task in enumerate(self.tasks)
        ]

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        yield  # the environment's simulator belongs to the caller

    async def play(self, item: Item[tuple[int, Task]], policy: Policy) -> tuple[Episode, Verdict]:
        index, task = item.data
        env = self.environment.episode(
            task,
            index=index,
            seed=derive_seed(self.seed, "eval-sim", index),
            policy_model=policy.name,
        )
        return await run_episode(env, policy)

    async def score(self, item: Item[tuple[int, Task]], outcome: tuple[Episode, Verdict]) -> Scored:
        episode, verdict = outcome
        _, task = item.data
        return Scored(
            float(verdict.succeeded),
            {
                "episode": episode.model_dump(mode="json"),
                "verdict": verdict.model_dump(mode="json"),
                "first_turn": first_turn(task, episode).model_dump(mode="json"),
            },
        )

    def category_figures(self, results: CategoryResults) -> dict[str, Any]:
        verdicts = [Verdict.model_validate(result.record["verdict"]) for result in results.results]
        figures = sim_figures(verdicts)
        turns = [result.record.get("first_turn") for result in results.results]
        if turns and all(turns):  # results cached before first turns were graded have none
            figures["scores"] |= {
                first_turn_metric(name): sum(float(t[name]) for t in turns if t) / len(turns)
                for name in RATES
            }
        return figures | {"tasks": results.category, "wall_s": results.wall_s}

    def figures(self, categories: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """This task set's figures; a summary speaks for one task set."""
        current = categories[self.label]
        return current | {"categories": {self.label: current}}


async def evaluate_sim(
    policy: Policy,
    tasks: list[Task],
    environment: Environment,
    out: Path,
    *,
    seed: int,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Whole episodes of `policy` on frozen `tasks`, each cached when judged."""
    benchmark = SimBenchmark(tasks, environment, seed=seed, concurrency=concurrency)
    return await run_benchmark(benchmark, policy, out, progress=progress)


class FirstTurnBenchmark:
    """Frozen tasks as training's held-out check reads them: each task's greedy first reply to its
    opening and tools, graded by its first call (`heldout.first_reply_scores`); no simulated user
    or tool is called. Items go in order of prompt size, `heldout.CHUNK` in flight by default, so
    an in-process model, which answers concurrent turns in one batch, generates the check's
    batches. An item scores 1 when its first call is valid."""

    name = BENCHMARK

    def __init__(self, tasks: list[Task], *, concurrency: int = CHUNK) -> None:
        if not tasks:
            raise ValueError("the simulated benchmark needs at least one frozen task")
        self.tasks = tasks
        self.concurrency = concurrency
        self.label = tasks_label(tasks)

    @property
    def settings(self) -> dict[str, Any]:
        return {"mode": FIRST_TURNS}

    def items(self) -> list[Item[Task]]:
        # A batch is padded to its longest prompt: batches of similar lengths waste the least.
        return [
            Item(ItemKey(self.label, task.id), task) for task in sorted(self.tasks, key=prompt_size)
        ]

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        yield  # nothing to hold: no simulator is called

    async def play(self, item: Item[Task], policy: Policy) -> Message:
        task = item.data
        (reply,) = await policy.act([Conversation(opening(task), task.tools)])
        return reply

    async def score(self, item: Item[Task], outcome: Message) -> Scored:
        (graded,) = first_reply_scores([item.data], [outcome]).per_task
        return Scored(
            float(graded.valid_call),
            {
                "reply": outcome.model_dump(mode="json"),
                "first_turn": graded.model_dump(mode="json"),
            },
        )

    def category_figures(self, results: CategoryResults) -> dict[str, Any]:
        outcomes = [
            HeldoutOutcome.model_validate(result.record["first_turn"]) for result in results.results
        ]
        return first_turn_figures(outcomes) | {"tasks": results.category, "wall_s": results.wall_s}

    def figures(self, categories: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """This task set's figures; a summary speaks for one task set."""
        current = categories[self.label]
        return current | {"categories": {self.label: current}}


async def evaluate_first_turns(
    policy: Policy,
    tasks: list[Task],
    out: Path,
    *,
    concurrency: int = CHUNK,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The first replies of `policy` to frozen `tasks`, each cached when graded."""
    benchmark = FirstTurnBenchmark(tasks, concurrency=concurrency)
    return await run_benchmark(benchmark, policy, out, progress=progress)


def first_turn_figures(outcomes: list[HeldoutOutcome]) -> dict[str, Any]:
    """Each held-out rate over the graded first replies, named as a whole-episode run names its
    first-turn rates (so compare lines them up), with its 95 % interval (Wilson for the pass/fail
    rates, a bootstrap for argument accuracy), and the count of each kind of invalid first call."""
    scores = scores_of(outcomes)
    intervals = score_intervals(scores)
    return {
        "scores": {first_turn_metric(name): getattr(scores, name) for name in RATES},
        "intervals": {
            first_turn_metric(name): {
                "low": intervals[name].low,
                "high": intervals[name].high,
                "method": "wilson" if name in PASS_FAIL else "bootstrap",
            }
            for name in RATES
            if name in intervals
        },
        "replies": len(outcomes),
        "problems": problem_counts(scores),
    }


def first_turn_metric(rate: str) -> str:
    return f"first turn {rate.replace('_', ' ')}"


def first_turn(task: Task, episode: Episode) -> HeldoutOutcome:
    """The episode's first agent turn graded as a training run's held-out check grades a first
    reply (by its first call), so a whole-episode evaluation also reads as that check."""
    reply = next((m for m in episode.messages if m.role == "assistant"), Message(role="assistant"))
    return first_reply_scores([task], [reply]).per_task[0]


def sim_figures(verdicts: list[Verdict]) -> dict[str, Any]:
    """Mean reward over scored episodes; success (`Verdict.succeeded`) and per-criterion pass
    rates over all episodes, an unscored episode counting as a failure."""
    scored = [v for v in verdicts if v.scored and v.reward is not None]
    success = sum(v.succeeded for v in verdicts) / max(len(verdicts), 1)
    names = sorted({c.name for v in scored for c in v.criteria})
    criteria = {
        name: sum(any(c.name == name and c.passed for c in v.criteria) for v in scored)
        / max(sum(any(c.name == name for c in v.criteria) for v in scored), 1)
        for name in names
    }
    mean_reward = sum(v.reward for v in scored if v.reward is not None) / max(len(scored), 1)
    return {
        "scores": {"success rate": success, "mean reward": mean_reward}
        | {f"criterion {name}": rate for name, rate in criteria.items()},
        "episodes": len(verdicts),
        "unscored": len(verdicts) - len(scored),
    }
