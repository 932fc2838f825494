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
from trustee_rl.episode import run_episode
from trustee_rl.lm import open_lm
from trustee_rl.policy.lm_policy import LMPolicy, Policy
from trustee_rl.schema import Episode, SimCall, Verdict
from trustee_rl.seeding import derive_rng, derive_seed
from trustee_rl.sim.catalog import load_catalog
from trustee_rl.sim.judge import JudgeConfig
from trustee_rl.sim.structured import SimulatorError
from trustee_rl.sim.taskgen import TaskGenConfig
from trustee_rl.store import RunStore


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
    policy_max_tokens: int = 256
    policy_temperature: float = 0.7
    curriculum: CurriculumConfig = Field(default_factory=CurriculumConfig)
    taskgen: TaskGenConfig = Field(default_factory=TaskGenConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)


# Changing these between a run and its resume would make the stored episodes a mix of two runs.
RESUME_KEYS = (
    "seed",
    "policy",
    "simulator",
    "catalog",
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

    @classmethod
    def open(cls, config: SimulateConfig) -> World:
        catalog = load_catalog(Path(config.catalog) if config.catalog else None)
        simulator = open_lm(config.simulator, config.simulator_model)
        policy_lm = open_lm(config.policy, config.policy_model)
        policy = LMPolicy(
            policy_lm, max_tokens=config.policy_max_tokens, temperature=config.policy_temperature
        )
        environment = Environment(simulator, catalog, config.judge, config.taskgen)
        return cls(environment=environment, policy=policy, config=config)

    async def close(self) -> None:
        simulator = self.environment.simulator
        await simulator.aclose()
        if isinstance(self.policy, LMPolicy) and self.policy.lm is not simulator:
            await self.policy.lm.aclose()


async def simulate_one(
    world: World, curriculum: Curriculum, index: int, store: RunStore
) -> tuple[Episode, Verdict]:
    config = world.config
    task_seed = derive_seed(config.seed, "task", index)
    episode_seed = derive_seed(config.seed, "episode", index)
    difficulty = curriculum.sample(derive_rng(config.seed, "difficulty", index))
    environment = world.environment
    log: list[SimCall] = []
    try:
        task = await environment.task(difficulty, task_seed, log)
    except SimulatorError as error:
        episode = Episode(
            id=f"ep_{episode_seed:08x}_{index}",
            task_id=f"task_{task_seed:08x}",
            index=index,
            seed=episode_seed,
            policy_model=world.policy.model,
            sim_calls=log,
            status="failed",
            end_reason=f"task generation failed: {error}",
        )
        judge = environment.judge
        verdict = Verdict.unscored(
            episode.id, episode.end_reason or "", judge.model, judge.prompt_version
        )
        store.save_episode(episode, verdict)
        return episode, verdict
    store.save_task(task)
    env = environment.episode(task, index=index, seed=episode_seed, policy_model=world.policy.model)
    env.episode.sim_calls = log
    episode, verdict = await run_episode(env, world.policy)
    store.save_episode(episode, verdict)
    return episode, verdict


ProgressCallback = Callable[[Episode, Verdict], None]


async def run_simulation(
    config: SimulateConfig,
    store: RunStore,
    world: World,
    on_episode: ProgressCallback | None = None,
) -> None:
    """Run (or resume) every episode of the run that is not stored yet."""
    store.discard_incomplete()
    saved = dict(store.curriculum_states())
    done = store.completed_indices()
    curriculum = Curriculum(config.curriculum)
    limiter = asyncio.Semaphore(config.concurrency)

    async def one(index: int) -> tuple[Episode, Verdict]:
        async with limiter:
            episode, verdict = await simulate_one(world, curriculum, index, store)
        if on_episode:
            on_episode(episode, verdict)
        return episode, verdict

    for batch in range(-(-config.episodes // config.batch_size)):
        indices = range(
            batch * config.batch_size, min(config.episodes, (batch + 1) * config.batch_size)
        )
        missing = [i for i in indices if i not in done]
        if not missing and batch in saved:
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
        rewards = []
        for index in indices:
            stored = store.episode(index)
            verdict = store.verdict(stored.id) if stored else None
            if stored and verdict and verdict.scored and verdict.reward is not None:
                task = store.task(stored.task_id)
                curriculum.record(task.difficulty, verdict.reward, verdict.reward > 0)
                rewards.append(verdict.reward)
        level_before = curriculum.level
        curriculum.update(rewards)
        store.save_curriculum(batch, curriculum.state.model_dump())
        saved[batch] = curriculum.state.model_dump()
        store.log_metrics(
            batch,
            {
                "mean_reward": sum(rewards) / len(rewards)
                if rewards
                else float("nan"),  # stored as NULL
                "scored": float(len(rewards)),
                "difficulty": level_before,
                "batch_wall_s": time.perf_counter() - started,
            },
        )
