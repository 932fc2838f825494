"""A held-out simulated benchmark: whole episodes on frozen tasks, so every model sees the same ones.

The tasks come from a training run's store (the held-out set it froze before training) or from a
JSONL file, written once from catalog domains the run never trained on. Episodes are played
against the simulated user and tools and judged as in training.
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
from trustee_rl.heldout import RATES, first_reply_scores
from trustee_rl.policy.base import Policy
from trustee_rl.runner import HELDOUT, TaskSource, run_episode
from trustee_rl.schema import Episode, HeldoutOutcome, Message, Task, Verdict
from trustee_rl.seeding import derive_seed

BENCHMARK = "sim"
DEFAULT_CONCURRENCY = 8


async def freeze_tasks(environment: Environment, count: int, seed: int, level: float) -> list[Task]:
    """`count` new tasks at difficulty `level` (aspects drawn as in training), from the held-out
    stream of `seed`. Raises SimulatorError when one cannot be written."""
    curriculum = Curriculum(CurriculumConfig(initial_level=level, mode="fixed"))
    return await TaskSource(environment, curriculum, seed, HELDOUT).draw_many(count)


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
        return {"judge": self.environment.judge.config.model_dump(mode="json")}

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
                f"first turn {name.replace('_', ' ')}": sum(float(t[name]) for t in turns if t)
                / len(turns)
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
