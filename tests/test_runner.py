"""The runner above EpisodeEnv: the task source's one failure policy, the store writer, lockstep
batches under a token budget, and the curriculum step. Simulators answer from a loopback server."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trustee_rl.curriculum import Curriculum, CurriculumConfig
from trustee_rl.environment import Environment
from trustee_rl.lm.openai_http import OpenAIHTTPLM
from trustee_rl.policy.factory import open_policy, open_transformers_policy
from trustee_rl.runner import (
    SIMULATION,
    TASK_ATTEMPTS,
    EpisodeRunner,
    TaskSource,
    advance_curriculum,
)
from trustee_rl.schema import Verdict
from trustee_rl.sim.catalog import load_catalog
from trustee_rl.sim.judge import JudgeConfig
from trustee_rl.store import RunStore
from trustee_rl.testing.openai_server import (
    AgentResponder,
    LoopbackOpenAIServer,
    Reply,
    SchemaResponder,
)

from .conftest import make_task


class FailingFirst:
    """Answers HTTP 500 to the first `failures` requests, then like SchemaResponder."""

    def __init__(self, failures: int) -> None:
        self.failures = itertools.count()
        self.limit = failures
        self.schema = SchemaResponder(seed=0)
        self.lock = threading.Lock()

    def __call__(self, request: dict[str, Any]) -> Reply:
        with self.lock:
            failing = next(self.failures) < self.limit
        return Reply(content="overloaded", status=500) if failing else self.schema(request)


@pytest.fixture
def simulator_at() -> Iterator[Any]:
    servers: list[LoopbackOpenAIServer] = []

    def start(responder: Any) -> OpenAIHTTPLM:
        server = LoopbackOpenAIServer(responder)
        server.start()
        servers.append(server)
        # No HTTP retries, so a refused request fails its simulator call at once.
        return OpenAIHTTPLM(server.base_url, model="sim", max_retries=0)

    yield start
    for server in servers:
        server.stop()


def source(lm: OpenAIHTTPLM, seed: int = 5) -> TaskSource:
    environment = Environment(lm, load_catalog(None), JudgeConfig(mode="rules"))
    return TaskSource(environment, Curriculum(CurriculumConfig(initial_level=30)), seed, SIMULATION)


async def test_the_same_key_draws_the_same_task(simulator_at: Any) -> None:
    tasks = source(simulator_at(SchemaResponder(seed=0)))
    first, again, other = await tasks.draw(3), await tasks.draw(3), await tasks.draw(4)
    assert first.task is not None and first.failure is None and first.calls
    assert first.task == again.task
    assert other.task is not None and other.task.id != first.task.id


async def test_a_failed_task_is_retried_under_the_next_seed(simulator_at: Any) -> None:
    # The first simulator call fails all its tries, so the first attempt fails as a whole.
    drawn = await source(simulator_at(FailingFirst(failures=3))).draw(0)
    clean = await source(simulator_at(SchemaResponder(seed=0))).draw(0)
    assert drawn.task is not None and clean.task is not None
    assert drawn.task.seed != clean.task.seed  # written under the retry's seed
    assert any(call.error for call in drawn.calls)  # the failed attempt's calls are kept


async def test_a_task_that_cannot_be_written_is_given_up_with_its_reason(
    simulator_at: Any, tmp_path: Path
) -> None:
    lm = simulator_at(FailingFirst(failures=10_000))
    drawn = await source(lm).draw(0)
    assert drawn.task is None
    assert drawn.failure is not None
    assert drawn.failure.startswith(f"task generation failed {TASK_ATTEMPTS} times")
    assert drawn.calls and all(call.error for call in drawn.calls)

    # Played, it becomes a failed, unscored episode that keeps those calls; no task is stored.
    environment = Environment(lm, load_catalog(None), JudgeConfig(mode="rules"))
    store = RunStore.create(tmp_path / "run", {"seed": 5})
    runner = EpisodeRunner(environment, open_policy(lm.base_url), store)
    played = await runner.play(drawn, index=0, seed=9)
    assert played.episode.status == "failed" and not played.verdict.scored
    assert store.tasks() == []
    (stored,) = store.episodes()
    assert stored.sim_calls == drawn.calls
    assert store.verdict(stored.id) == played.verdict
    store.close()


async def test_play_stores_task_episode_and_verdict(simulator_at: Any, tmp_path: Path) -> None:
    lm = simulator_at(AgentResponder(seed=0))
    environment = Environment(lm, load_catalog(None), JudgeConfig(mode="rules"))
    store = RunStore.create(tmp_path / "run", {"seed": 5})
    runner = EpisodeRunner(environment, open_policy(lm.base_url), store)
    drawn = await source(lm).draw(0)
    played = await runner.play(drawn, index=0, seed=9)
    assert played.verdict.scored and played.episode.status == "done"
    assert store.tasks() == [drawn.task]
    (stored,) = store.episodes()
    assert stored.messages == played.episode.messages
    # The task generator's calls come first in the episode's record, then the episode's own.
    assert stored.sim_calls[: len(drawn.calls)] == drawn.calls
    assert store.verdict(stored.id) == played.verdict
    store.close()


@pytest.mark.embedded
async def test_lockstep_episodes_stop_at_their_token_budget(simulator_at: Any) -> None:
    lm = simulator_at(AgentResponder(seed=0))
    environment = Environment(lm, load_catalog(None), JudgeConfig(mode="rules"))
    policy = open_transformers_policy(
        "embedded", max_new_tokens=6, temperature=1.0, batch_sampling=True
    )
    runner = EpisodeRunner(environment, policy, new_ledger=policy.new_ledger, max_episode_tokens=4)
    task = make_task()
    envs = [runner.episode(task, index=i, seed=3) for i in range(6)]
    played = await runner.play_lockstep(envs)
    assert len(played) == 6
    for result in played:
        assert result.episode.status == "done"
        assert result.ledger is not None
        # The first turn is capped at the whole budget.
        assert result.ledger.num_policy_tokens <= 4
    assert any(result.episode.end_reason == "token_budget" for result in played)
    # One seed for the whole group, yet every member is its own sample.
    first_replies = {result.episode.messages[2].model_dump_json() for result in played}
    assert len(first_replies) > 1
    assert runner.timings.policy_s > 0 and runner.timings.judge_s >= 0


def test_the_curriculum_moves_on_scored_episodes_only(tmp_path: Path) -> None:
    curriculum = Curriculum(CurriculumConfig(initial_level=10, step=3))
    task = make_task()

    def verdict(reward: float | None) -> Verdict:
        if reward is None:
            return Verdict.unscored("ep", "judge failed", "rules", "r")
        return Verdict(
            episode_id="ep", scored=True, reward=reward, judge_model="rules", prompt_version="r"
        )

    with RunStore.create(tmp_path / "run", {"seed": 1}) as store:
        rewards = advance_curriculum(
            curriculum,
            0,
            [(task, verdict(1.0)), (task, verdict(0.5)), (task, verdict(None))],
            store,
        )
        assert rewards == [1.0, 0.5]
        assert curriculum.level == 13  # mean 0.75 > 0.5: one step up
        persona = curriculum.state.aspect_stats["persona"][task.difficulty.persona]
        assert (persona.episodes, persona.successes) == (2, 1)  # success is the top reward only
        assert store.curriculum_states() == [(0, curriculum.state.model_dump())]
