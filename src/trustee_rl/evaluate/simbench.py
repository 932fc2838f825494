"""A held-out simulated benchmark: tasks frozen to a file, so every model sees the same ones.

`first_turn_scores` grades the policy's first reply to each task by rules alone (no simulator
calls), which makes it cheap enough to run before and after every training stage on a CPU.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trustee_rl.curriculum import Curriculum, CurriculumConfig
from trustee_rl.environment import Environment
from trustee_rl.episode import run_episode
from trustee_rl.evaluate.agent import Agent, AgentPolicy
from trustee_rl.evaluate.results import ResultCache, gather_bounded, update_summary
from trustee_rl.schema import Message, SimCall, Task, Verdict
from trustee_rl.seeding import derive_rng, derive_seed
from trustee_rl.sim.judge import leaf_score
from trustee_rl.sim.structured import SimulatorError
from trustee_rl.sim.tools import call_error


async def freeze_tasks(environment: Environment, count: int, seed: int, level: float) -> list[Task]:
    """`count` tasks at difficulty `level` (aspects drawn as in training). Raises if the simulator
    fails on more than a quarter of the attempts."""
    curriculum = Curriculum(CurriculumConfig(initial_level=level, mode="fixed"))
    tasks: list[Task] = []
    attempt = 0
    while len(tasks) < count:
        if attempt >= count + count // 4 + 1:
            raise SimulatorError(f"only {len(tasks)} of {count} held-out tasks could be generated")
        difficulty = curriculum.sample(derive_rng(seed, "heldout-difficulty", attempt))
        log: list[SimCall] = []
        with contextlib.suppress(SimulatorError):  # a failed task is replaced by the next attempt
            tasks.append(
                await environment.task(difficulty, derive_seed(seed, "heldout", attempt), log)
            )
        attempt += 1
    return tasks


def save_tasks(path: Path, tasks: list[Task]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text("".join(task.model_dump_json() + "\n" for task in tasks), encoding="utf-8")
    temporary.replace(path)


def load_tasks(path: Path) -> list[Task]:
    return [
        Task.model_validate_json(line)
        for line in path.read_text(encoding="utf-8").splitlines()
        if line
    ]


@dataclass
class FirstTurnScores:
    tasks: int
    any_call: float  # replies that attempt at least one call
    valid_call: float  # replies whose calls all parse, name offered tools and fit their schemas
    right_tool: float  # replies whose first call names an expected tool
    argument_accuracy: float  # mean share of expected argument values the best call got right

    def as_dict(self) -> dict[str, float]:
        return {key: float(value) for key, value in asdict(self).items()}


def first_turn_scores(tasks: list[Task], replies: list[Message]) -> FirstTurnScores:
    any_call = valid = right = 0
    accuracy = 0.0
    for task, reply in zip(tasks, replies, strict=True):
        calls = reply.tool_calls
        if not calls:
            continue
        any_call += 1
        valid += all(call_error(call, task) is None for call in calls)
        right += calls[0].name in {expected.name for expected in task.expected_calls}
        first_expected = task.expected_calls[0]
        accuracy += max(leaf_score(first_expected, call) for call in calls)
    n = max(len(tasks), 1)
    return FirstTurnScores(len(tasks), any_call / n, valid / n, right / n, accuracy / n)


def write_scores(path: Path, stage_scores: dict[str, FirstTurnScores]) -> None:
    path.write_text(
        json.dumps({stage: s.as_dict() for stage, s in stage_scores.items()}, indent=2),
        encoding="utf-8",
    )


BENCHMARK = "sim"


def tasks_label(tasks: list[Task]) -> str:
    """Names a frozen task set by its content, so results on different sets never mix."""
    digest = hashlib.sha256("".join(task.model_dump_json() for task in tasks).encode())
    return f"tasks-{digest.hexdigest()[:10]}"


async def evaluate_sim(
    agent: Agent,
    tasks: list[Task],
    environment: Environment,
    out: Path,
    *,
    seed: int,
    concurrency: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Whole episodes of `agent` on frozen `tasks` against the simulated user and tools, judged as
    in training. Each episode is cached when judged, so an interrupted evaluation resumes."""
    cache = ResultCache(out)
    category = tasks_label(tasks)
    records: dict[int, dict[str, Any]] = {}
    todo = []
    for index, task in enumerate(tasks):
        cached = cache.get(agent.name, BENCHMARK, category, task.id)
        if cached is None:
            todo.append(index)
        else:
            records[index] = cached[1]
    started = time.perf_counter()
    policy = AgentPolicy(agent)

    def report() -> None:
        if progress is not None:
            progress(len(records), len(tasks))

    async def play(index: int) -> None:
        task = tasks[index]
        env = environment.episode(
            task, index=index, seed=derive_seed(seed, "eval-sim", index), policy_model=agent.name
        )
        episode, verdict = await run_episode(env, policy)
        record = {
            "episode": episode.model_dump(mode="json"),
            "verdict": verdict.model_dump(mode="json"),
        }
        cache.put(agent.name, BENCHMARK, category, task.id, float(succeeded(verdict)), record)
        records[index] = record
        report()

    report()
    try:
        await gather_bounded(todo, concurrency, play)
    finally:
        cache.close()
    verdicts = [Verdict.model_validate(records[i]["verdict"]) for i in range(len(tasks))]
    figures = sim_figures(verdicts) | {
        "tasks": category,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    update_summary(out, agent.name, BENCHMARK, figures)
    return figures


def succeeded(verdict: Verdict) -> bool:
    """A task counts as solved when its episode was judged and passed every criterion."""
    return verdict.scored and all(criterion.passed for criterion in verdict.criteria)


def sim_figures(verdicts: list[Verdict]) -> dict[str, Any]:
    """Mean reward over scored episodes; success (every criterion passed) and per-criterion pass
    rates over all episodes, an unscored episode counting as a failure."""
    scored = [v for v in verdicts if v.scored and v.reward is not None]
    success = sum(map(succeeded, verdicts)) / max(len(verdicts), 1)
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
