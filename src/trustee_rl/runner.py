"""The one runner above `EpisodeEnv`: where tasks come from and how episodes are played and stored.

- `TaskSource` draws tasks for one purpose (simulation, training groups, held-out sets,
  demonstrations) from the curriculum and the run seed, with one failure policy: a task the
  simulator fails to write is retried under the next derived seed, TASK_ATTEMPTS times in all, and
  then given up with its reason. The generator's own simulator calls are kept with the task.
- `EpisodeRunner` plays episodes against a policy: one at a time with free concurrency (`play`)
  or a GRPO batch in lockstep, every live episode's turn in one `Policy.act` (`play_lockstep`).
  It is also the one writer of tasks, episodes and verdicts to the run store.
- `advance_curriculum` is the one place a batch of judged episodes moves the curriculum.

Task i of a stream derives its seed and difficulty from (run seed, stream, key) alone, so a rerun
or a resume produces the same records whatever the concurrency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from trustee_rl.curriculum import Curriculum, CurriculumConfig
from trustee_rl.environment import Environment
from trustee_rl.episode import EpisodeEnv
from trustee_rl.lm.base import LMError, LMUnavailable
from trustee_rl.policy.base import Conversation, Policy, TokenRecord
from trustee_rl.schema import Episode, SimCall, Task, Verdict
from trustee_rl.seeding import derive_rng, derive_seed
from trustee_rl.sim.structured import SimulatorError
from trustee_rl.store import RunStore

TASK_ATTEMPTS = 3


@dataclass(frozen=True)
class Stream:
    """The names a purpose's task seeds and difficulty draws are derived under."""

    task: str
    difficulty: str


SIMULATION = Stream("task", "difficulty")
TRAINING = Stream("train-task", "train-difficulty")
HELDOUT = Stream("heldout", "heldout-difficulty")
DEMONSTRATION = Stream("demo", "demo-difficulty")


@dataclass
class DrawnTask:
    """A task, or the reason there is none, with every simulator call made to write it."""

    task: Task | None
    calls: list[SimCall]
    seed: int
    failure: str | None = None


class TaskDrawer(Protocol):
    """Where episode `index`'s task comes from: the generator under the curriculum
    (`TaskSource`) or a fixed task set (`task_files.FileTaskSource`)."""

    async def draw(self, index: int, /) -> DrawnTask: ...


class TaskSource:
    def __init__(
        self, environment: Environment, curriculum: Curriculum, seed: int, stream: Stream
    ) -> None:
        self.environment = environment
        self.curriculum = curriculum
        self.seed = seed
        self.stream = stream

    async def draw(self, *key: object) -> DrawnTask:
        calls: list[SimCall] = []
        first_seed = derive_seed(self.seed, self.stream.task, *key)
        failure = ""
        for attempt in range(TASK_ATTEMPTS):
            retry = () if attempt == 0 else ("retry", attempt)
            difficulty = self.curriculum.sample(
                derive_rng(self.seed, self.stream.difficulty, *key, *retry)
            )
            task_seed = derive_seed(self.seed, self.stream.task, *key, *retry)
            try:
                task = await self.environment.task(difficulty, task_seed, calls)
            except SimulatorError as error:
                failure = str(error)
                continue
            return DrawnTask(task, calls, task_seed)
        return DrawnTask(
            None, calls, first_seed, f"task generation failed {TASK_ATTEMPTS} times: {failure}"
        )

    async def draw_many(self, count: int) -> list[Task]:
        """`count` tasks, keys 0..count-1; raises when any cannot be written."""
        return _all_written([await self.draw(position) for position in range(count)])


def _all_written(drawn: list[DrawnTask]) -> list[Task]:
    failed = [d.failure for d in drawn if d.task is None]
    if failed:
        raise SimulatorError(
            f"{len(failed)} of {len(drawn)} tasks could not be written: {failed[0]}"
        )
    return [d.task for d in drawn if d.task is not None]


# Task sets spread over difficulty are drawn at this many evenly spaced levels.
LEVEL_BUCKETS = 8


class SpreadTaskSource:
    """Tasks at `LEVEL_BUCKETS` evenly spaced fixed difficulty levels from 1 to `max_level`, the
    curriculum's other settings (the share of tasks no tool fits, say) held: task `index` comes
    from level bucket `index % LEVEL_BUCKETS`, so any run of consecutive tasks spans the range."""

    def __init__(
        self,
        environment: Environment,
        curriculum: CurriculumConfig,
        seed: int,
        stream: Stream,
        max_level: float,
    ) -> None:
        self.sources = [
            TaskSource(
                environment,
                Curriculum(
                    curriculum.model_copy(
                        update={
                            "initial_level": 1 + (max_level - 1) * bucket / (LEVEL_BUCKETS - 1),
                            "mode": "fixed",
                        }
                    )
                ),
                seed,
                stream,
            )
            for bucket in range(LEVEL_BUCKETS)
        ]

    async def draw(self, index: int, /) -> DrawnTask:
        return await self.sources[index % LEVEL_BUCKETS].draw(index)

    async def draw_many(self, count: int) -> list[Task]:
        """`count` tasks, indices 0..count-1; raises when any cannot be written."""
        return _all_written([await self.draw(index) for index in range(count)])


@dataclass
class Played:
    """One finished episode and what it was played on."""

    task: Task | None
    episode: Episode
    verdict: Verdict
    ledger: TokenRecord | None = None


@dataclass
class Timings:
    """Where a lockstep batch spent its time."""

    policy_s: float = 0.0
    environment_s: float = 0.0
    judge_s: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "policy_s": self.policy_s,
            "environment_s": self.environment_s,
            "judge_s": self.judge_s,
        }


@dataclass
class EpisodeRunner:
    environment: Environment
    policy: Policy
    store: RunStore | None = None
    # For lockstep batches: a new token ledger per episode, and the policy tokens one may spend.
    new_ledger: Callable[[], TokenRecord] | None = None
    max_episode_tokens: int = 1 << 30
    timings: Timings = field(default_factory=Timings)

    def episode(
        self, task: Task, *, index: int, seed: int, episode_id: str | None = None
    ) -> EpisodeEnv:
        env = self.environment.episode(task, index=index, seed=seed, policy_model=self.policy.name)
        if episode_id is not None:
            env.episode.id = episode_id
        return env

    async def play(self, drawn: DrawnTask, *, index: int, seed: int) -> Played:
        """One episode at a time; concurrent callers share the policy's batches. A task that could
        not be written becomes a failed, unscored episode that keeps the generator's calls."""
        if drawn.task is None:
            played = self._untasked(drawn, index=index, seed=seed)
        else:
            env = self.episode(drawn.task, index=index, seed=seed)
            env.episode.sim_calls = list(drawn.calls)
            played = Played(drawn.task, *await run_episode(env, self.policy))
        self.record(played)
        return played

    async def play_lockstep(self, envs: Sequence[EpisodeEnv]) -> list[Played]:
        """Episodes stepped together: each round, every live episode's turn is one `act` call,
        so a local policy generates them in one batch."""
        ledgers = [self.new_ledger() if self.new_ledger else None for _ in envs]
        for env in envs:
            env.reset()
        live = list(range(len(envs)))
        while live:
            conversations = [
                Conversation(
                    envs[i].episode.messages,
                    envs[i].task.tools,
                    seed=derive_seed(envs[i].seed, "policy", envs[i].policy_turns),
                    max_tokens=self._budget(ledgers[i]),
                    ledger=ledgers[i],
                )
                for i in live
            ]
            started = time.perf_counter()
            replies = await self.policy.act(conversations)
            self.timings.policy_s += time.perf_counter() - started
            started = time.perf_counter()
            results = await asyncio.gather(
                *(envs[i].step(reply) for i, reply in zip(live, replies, strict=True))
            )
            self.timings.environment_s += time.perf_counter() - started
            live = [i for i, result in zip(live, results, strict=True) if not result.done]
            for i in live:
                if self._budget(ledgers[i]) == 0:
                    envs[i].stop("token_budget")
            live = [i for i in live if not envs[i].done]
        started = time.perf_counter()
        verdicts = await asyncio.gather(*(env.finish() for env in envs))
        self.timings.judge_s += time.perf_counter() - started
        return [
            Played(env.task, env.episode, verdict, ledger)
            for env, verdict, ledger in zip(envs, verdicts, ledgers, strict=True)
        ]

    def record(self, played: Played) -> None:
        """The one place episodes reach the store: the task first, then episode and verdict."""
        if self.store is None:
            return
        if played.task is not None:
            self.store.save_task(played.task)
        self.store.save_episode(played.episode, played.verdict)

    def _budget(self, ledger: TokenRecord | None) -> int | None:
        if ledger is None:
            return None
        return max(self.max_episode_tokens - ledger.num_policy_tokens, 0)

    def _untasked(self, drawn: DrawnTask, *, index: int, seed: int) -> Played:
        episode = Episode(
            id=f"ep_{seed:08x}_{index}",
            task_id=f"task_{drawn.seed:08x}",
            index=index,
            seed=seed,
            policy_model=self.policy.name,
            sim_calls=list(drawn.calls),
            status="failed",
            end_reason=drawn.failure,
        )
        judge = self.environment.judge
        verdict = Verdict.unscored(
            episode.id, drawn.failure or "", judge.model, judge.prompt_version
        )
        return Played(None, episode, verdict)


async def run_episode(env: EpisodeEnv, policy: Policy) -> tuple[Episode, Verdict]:
    """Drive one episode to its verdict, one policy turn at a time."""
    env.reset()
    while not env.done:
        seed = derive_seed(env.seed, "policy", env.policy_turns)
        try:
            (reply,) = await policy.act(
                [Conversation(env.episode.messages, env.task.tools, seed=seed)]
            )
        except LMUnavailable:
            raise
        except LMError as error:
            env.fail(f"policy failed: {error}")
            break
        await env.step(reply)
    return env.episode, await env.finish()


def advance_curriculum(
    curriculum: Curriculum,
    step: int,
    played: Sequence[tuple[Task, Verdict]],
    store: RunStore | None,
) -> list[float]:
    """Record a batch's judged episodes per aspect, move D from their rewards and store the new
    state under `step`. Returns the scored rewards."""
    rewards = []
    for task, verdict in played:
        if verdict.scored and verdict.reward is not None:
            curriculum.record(task.difficulty, verdict.reward, verdict.succeeded)
            rewards.append(verdict.reward)
    curriculum.update(rewards)
    if store is not None:
        store.save_curriculum(step, curriculum.state.model_dump())
    return rewards
