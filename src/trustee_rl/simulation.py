"""Roll out many episodes concurrently into a run store: the engine behind `trustee simulate`.

Episode i's task, difficulty and seeds derive from (run seed, i) alone, so a rerun or a resume
produces the same records whatever the concurrency. Episodes run in batches; the curriculum moves
after each batch and its state is stored with the batch number, so a resume picks up exactly there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from trustee_rl.curriculum import Curriculum, CurriculumConfig, CurriculumState
from trustee_rl.environment import Environment
from trustee_rl.lm import open_lm
from trustee_rl.lm.openai_http import HTTPClientConfig
from trustee_rl.policy.base import Policy
from trustee_rl.policy.factory import open_policy
from trustee_rl.runner import SIMULATION, EpisodeRunner, TaskSource, advance_curriculum
from trustee_rl.schema import Episode, Task, Verdict
from trustee_rl.seeding import derive_seed
from trustee_rl.sim.catalog import load_catalog
from trustee_rl.sim.judge import JudgeConfig
from trustee_rl.sim.taskgen import TaskGenConfig
from trustee_rl.store import RunStore
from trustee_rl.task_files import FileTaskSource, load_task_file


class SimulateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    episodes: int = Field(default=8, ge=1)
    seed: int = 0
    concurrency: int = Field(default=8, ge=1, description="episodes in flight at once")
    batch_size: int = Field(default=8, ge=1, description="episodes between curriculum updates")
    policy: str = "embedded"
    policy_model: str | None = None
    simulator: str = "embedded"
    simulator_model: str | None = None
    catalog: str | None = None
    # A JSONL file of tasks (`trustee tasks synthesize` writes one) played in turn instead of
    # generated ones.
    tasks: str | None = None
    policy_max_tokens: int = 256
    policy_temperature: float = 0.7
    curriculum: CurriculumConfig = Field(default_factory=CurriculumConfig)
    taskgen: TaskGenConfig = Field(default_factory=TaskGenConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    # Timeout and retries of the policy's and simulator's server, when they are URLs.
    http: HTTPClientConfig = Field(default_factory=HTTPClientConfig)


# Changing these between a run and its resume would make the stored episodes a mix of two runs.
RESUME_KEYS = (
    "seed",
    "policy",
    "simulator",
    "catalog",
    "tasks",
    "curriculum",
    "taskgen",
    "judge",
    "batch_size",
)


@dataclass
class World:
    """Everything an episode needs besides its index: the simulated environment and the policy."""

    environment: Environment
    policy: Policy
    config: SimulateConfig
    tasks: list[Task] | None = None

    @classmethod
    def open(cls, config: SimulateConfig) -> World:
        catalog = load_catalog(Path(config.catalog) if config.catalog else None)
        tasks = load_task_file(Path(config.tasks)) if config.tasks else None
        simulator = open_lm(config.simulator, config.simulator_model, config.http)
        policy = open_policy(
            config.policy,
            model_name=config.policy_model,
            max_new_tokens=config.policy_max_tokens,
            temperature=config.policy_temperature,
            http=config.http,
        )
        environment = Environment(simulator, catalog, config.judge, config.taskgen)
        return cls(environment=environment, policy=policy, config=config, tasks=tasks)

    async def close(self) -> None:
        await self.environment.simulator.aclose()
        await self.policy.aclose()


ProgressCallback = Callable[[Episode, Verdict], None]


async def run_simulation(
    config: SimulateConfig,
    store: RunStore,
    world: World,
    on_episode: ProgressCallback | None = None,
) -> None:
    """Run (or resume) every episode of the run that is not stored yet, in batches; the
    curriculum moves after each batch and its state is stored under the batch number."""
    store.discard_incomplete()
    saved = dict(store.curriculum_states())
    logged = {step for step, _, _ in store.metrics()}
    done = store.completed_indices()
    curriculum = Curriculum(config.curriculum)
    tasks = (
        FileTaskSource(world.tasks)
        if world.tasks is not None
        else TaskSource(world.environment, curriculum, config.seed, SIMULATION)
    )
    runner = EpisodeRunner(world.environment, world.policy, store)
    limiter = asyncio.Semaphore(config.concurrency)

    async def one(index: int) -> None:
        async with limiter:
            drawn = await tasks.draw(index)
            played = await runner.play(
                drawn, index=index, seed=derive_seed(config.seed, "episode", index)
            )
        if on_episode:
            on_episode(played.episode, played.verdict)

    for batch in range(-(-config.episodes // config.batch_size)):
        indices = range(
            batch * config.batch_size, min(config.episodes, (batch + 1) * config.batch_size)
        )
        missing = [i for i in indices if i not in done]
        # A kill between a batch's two writes leaves its state without metrics: redo it then.
        if not missing and batch in saved and batch in logged:
            curriculum.state = CurriculumState.model_validate(saved[batch])
            continue
        # A batch (re)starts from the state its predecessor left, so a resume replays it exactly.
        before = saved.get(batch - 1)
        curriculum.state = (
            CurriculumState.model_validate(before)
            if before
            else CurriculumState(level=config.curriculum.initial_level)
        )
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in missing))
        judged = []
        for index in indices:  # from the store, so episodes of an earlier session count too
            stored = store.episode(index)
            verdict = store.verdict(stored.id) if stored else None
            if stored and verdict and verdict.scored:
                judged.append((store.task(stored.task_id), verdict))
        level_before = curriculum.level
        rewards = advance_curriculum(curriculum, batch, judged, store)
        saved[batch] = curriculum.state.model_dump()
        store.log_metrics(
            batch,
            {
                # NaN is stored as NULL
                "mean_reward": sum(rewards) / len(rewards) if rewards else float("nan"),
                "scored": float(len(rewards)),
                "difficulty": level_before,
                "batch_wall_s": time.perf_counter() - started,
            },
        )
