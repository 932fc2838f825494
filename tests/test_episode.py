"""EpisodeEnv as a state machine, with its simulators answering from a loopback OpenAI server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from trustee_rl.environment import Environment
from trustee_rl.episode import EpisodeEnv, EpisodeLimits
from trustee_rl.lm.openai_http import OpenAIHTTPLM
from trustee_rl.schema import Message, SimCall, Task, ToolCall
from trustee_rl.seeding import derive_seed
from trustee_rl.sim.catalog import load_catalog
from trustee_rl.sim.judge import JudgeConfig
from trustee_rl.testing.openai_server import LoopbackOpenAIServer, Reply, ScriptedResponder

from .conftest import make_task

SEED = 11


@asynccontextmanager
async def episode_over(
    task: Task,
    replies: list[Reply],
    judge: JudgeConfig | None = None,
    limits: EpisodeLimits | None = None,
) -> AsyncIterator[tuple[EpisodeEnv, LoopbackOpenAIServer]]:
    """A reset episode whose simulator answers with `replies`, in order, then fails."""
    with LoopbackOpenAIServer(ScriptedResponder(replies)) as server:
        # No HTTP retries: a scripted server that ran out must fail the call at once.
        lm = OpenAIHTTPLM(
            server.base_url, model="sim", structured_output="json_schema", max_retries=0
        )
        environment = Environment(
            lm, load_catalog(None), judge or JudgeConfig(mode="rules"), limits=limits
        )
        env = environment.episode(task, index=0, seed=SEED, policy_model="policy")
        env.reset()
        try:
            yield env, server
        finally:
            await lm.aclose()


def json_reply(value: dict[str, Any]) -> Reply:
    return Reply(content=json.dumps(value))


def says(text: str) -> Message:
    return Message(role="assistant", content=text)


def calls(**arguments: Any) -> Message:
    return Message(role="assistant", tool_calls=[ToolCall(name="get_weather", arguments=arguments)])


async def test_reset_shows_the_policy_the_system_prompt_and_the_opening() -> None:
    task = make_task()
    async with episode_over(task, []) as (env, server):
        assert [m.role for m in env.episode.messages] == ["system", "user"]
        assert env.episode.messages[0].content == task.system_prompt
        assert env.episode.messages[1].content == task.initial_message
        assert not env.done and env.episode.id == f"ep_{SEED:08x}_0"
        assert server.requests == []


async def test_a_tool_turn_appends_the_results_and_the_policy_acts_again() -> None:
    result_value = {"temperature": 3.5, "summary": "cold"}
    async with episode_over(make_task(), [json_reply(result_value)]) as (env, server):
        reply = calls(city="Oslo")
        result = await env.step(reply)
        assert not result.done and env.policy_turns == 1
        [tool_message] = result.messages
        assert tool_message.role == "tool" and tool_message.name == "get_weather"
        assert tool_message.tool_call_id == "call_1_0"  # from the turn, not from the backend
        assert json.loads(tool_message.content or "") == result_value
        assert env.episode.messages[-2:] == [reply, tool_message]
        assert [call.role for call in env.episode.sim_calls] == ["tool"]
        assert len(server.requests) == 1


async def test_a_plain_reply_gets_the_users_answer() -> None:
    reply = json_reply({"reply": "Oslo, please.", "done": False})
    async with episode_over(make_task(), [reply]) as (env, _):
        result = await env.step(says("Which city?"))
        assert not result.done
        assert result.messages == [Message(role="user", content="Oslo, please.")]
        assert env.episode.messages[-1] == result.messages[0]
        [call] = env.episode.sim_calls
        assert call.role == "user" and call.prompt_version == "user@2"
        assert call.seed == derive_seed(SEED, "user", 1)


async def test_the_user_saying_done_ends_the_episode_and_it_is_judged() -> None:
    replies = [
        json_reply({"temperature": 3.5, "summary": "cold"}),
        json_reply({"reply": "Thanks, that is all.", "done": True}),
    ]
    async with episode_over(make_task(), replies) as (env, _):
        assert not (await env.step(calls(city="Oslo"))).done
        result = await env.step(says("It is 3.5 degrees and cold in Oslo."))
        assert result.done and env.done
        assert (env.episode.status, env.episode.end_reason) == ("done", "user_done")
        verdict = await env.finish()
        assert verdict.scored and verdict.reward == 1.0
        with pytest.raises(RuntimeError):
            await env.step(says("Anything else?"))


async def test_the_turn_limit_ends_the_episode() -> None:
    task = make_task()
    async with episode_over(task, []) as (env, _):
        limit = task.difficulty.max_policy_turns
        # Calls to a tool not on offer are answered without the simulator: no replies needed.
        unknown = Message(role="assistant", tool_calls=[ToolCall(name="launch_rocket")])
        for _ in range(limit - 1):
            assert not (await env.step(unknown.model_copy(deep=True))).done
        with pytest.raises(RuntimeError):
            await env.finish()
        assert (await env.step(unknown.model_copy(deep=True))).done
        assert (env.episode.status, env.episode.end_reason) == ("done", "max_turns")
        assert env.policy_turns == limit


async def test_a_simulator_failure_fails_the_episode_and_leaves_it_unscored() -> None:
    invalid = json_reply({"reply": "fine"})  # no "done": every try breaks the schema
    async with episode_over(make_task(), [invalid] * 3) as (env, _):
        result = await env.step(says("Which city?"))
        assert result.done and result.messages == []
        assert env.episode.status == "failed"
        reason = env.episode.end_reason or ""
        assert reason.startswith("simulator failed: user simulator gave no valid output in 3 tries")
        assert [call.attempts for call in env.episode.sim_calls] == [1, 2, 3]
        assert all(call.error for call in env.episode.sim_calls)
        verdict = await env.finish()
        assert not verdict.scored and verdict.reward is None
        assert verdict.unscored_reason == reason


async def test_simulator_calls_join_the_list_the_episode_holds_when_they_are_made() -> None:
    # A runner hands the episode its task's generation calls after creating it.
    generation = SimCall(role="taskgen", model="sim", prompt_version="taskgen@1", messages=[])
    answer = json_reply({"reply": "Oslo", "done": False})
    async with episode_over(make_task(), [answer]) as (env, _):
        env.episode.sim_calls = [generation]
        await env.step(says("Which city?"))
        assert [call.role for call in env.episode.sim_calls] == ["taskgen", "user"]


async def test_an_lm_judge_records_its_call_with_the_episode() -> None:
    passed = {"reason": "ok", "passed": True}
    judgement = {"intent": passed, "rubric:report": passed, "grounded": passed}
    replies = [
        json_reply({"temperature": 3.5, "summary": "cold"}),
        json_reply({"reply": "Thanks.", "done": True}),
        json_reply(judgement),
    ]
    async with episode_over(make_task(), replies, JudgeConfig(mode="lm")) as (env, server):
        await env.step(calls(city="Oslo"))
        await env.step(says("It is cold in Oslo."))
        verdict = await env.finish()
        judge_call = env.episode.sim_calls[-1]
        assert judge_call.role == "judge" and judge_call.seed == derive_seed(SEED, "judge")
        assert verdict.scored and verdict.prompt_version == judge_call.prompt_version == "judge@2"
        assert {c.name for c in verdict.criteria if c.source == "judge"} == set(judgement)
        checks = server.requests[-1]["messages"][1]["content"]
        assert f"- intent: The user's goal was achieved: {make_task().goal}" in checks


async def test_calls_past_the_per_turn_limit_are_refused_without_the_simulator() -> None:
    cities = [f"City{i}" for i in range(12)]
    results = [json_reply({"temperature": i, "summary": "mild"}) for i in range(12)]
    async with episode_over(make_task(), results) as (env, server):
        reply = Message(
            role="assistant",
            tool_calls=[ToolCall(name="get_weather", arguments={"city": c}) for c in cities],
        )
        result = await env.step(reply)
        allowed = EpisodeLimits().calls_per_turn
        assert len(server.requests) == allowed == len(env.episode.sim_calls)
        assert [m.tool_call_id for m in result.messages] == [f"call_1_{i}" for i in range(12)]
        refused = result.messages[allowed:]
        assert all("more than 8 calls in one turn" in (m.content or "") for m in refused)
        assert not result.done


async def test_the_simulator_call_limit_ends_the_episode_and_it_is_judged() -> None:
    answers = [
        json_reply({"reply": "Oslo, please.", "done": False}),
        json_reply({"reply": "Celsius, please.", "done": False}),
    ]
    limits = EpisodeLimits(simulator_calls=2)
    async with episode_over(make_task(), answers, limits=limits) as (env, server):
        assert not (await env.step(says("Which city?"))).done
        assert (await env.step(says("And which units?"))).done
        assert (env.episode.status, env.episode.end_reason) == ("done", "simulator_call_limit")
        assert len(server.requests) == 2
        verdict = await env.finish()
        assert verdict.scored
