"""The user simulator keeps its private facts until asked, and never sees tool traffic."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from trustee_rl.environment import Environment
from trustee_rl.episode import EpisodeEnv
from trustee_rl.lm.openai_http import OpenAIHTTPLM
from trustee_rl.schema import Message, ToolCall
from trustee_rl.sim.catalog import load_catalog
from trustee_rl.sim.judge import JudgeConfig
from trustee_rl.testing.openai_server import LoopbackOpenAIServer, Reply, ScriptedResponder

from .conftest import make_task

FACT = make_task().private_facts["city"]
LEAK = Reply(content=json.dumps({"reply": f"I am in {FACT}.", "done": False}))
CLEAN = Reply(content=json.dumps({"reply": "I would like today's weather.", "done": False}))
COMPLAINT = "the assistant did not ask, so do not give city yet"


@asynccontextmanager
async def episode_with_user(replies: list[Reply]) -> AsyncIterator[EpisodeEnv]:
    """A reset episode over the weather task whose simulator answers with `replies`, in order."""
    with LoopbackOpenAIServer(ScriptedResponder(replies)) as server:
        lm = OpenAIHTTPLM(server.base_url, model="sim", structured_output="json_schema")
        environment = Environment(lm, load_catalog(None), JudgeConfig(mode="rules"))
        env = environment.episode(make_task(), index=0, seed=3, policy_model="policy")
        env.reset()
        try:
            yield env
        finally:
            await lm.aclose()


def says(text: str) -> Message:
    return Message(role="assistant", content=text)


async def test_a_fact_the_agent_did_not_ask_for_is_rejected_and_asked_again() -> None:
    async with episode_with_user([LEAK, CLEAN]) as env:
        result = await env.step(says("Happy to help with the weather."))
        [answer] = result.messages
        assert answer.content == "I would like today's weather."
        assert FACT not in (answer.content or "")
        rejected, accepted = env.episode.sim_calls
        assert rejected.error == COMPLAINT and accepted.error is None
        assert accepted.messages[-1]["content"] == (
            f"That output was rejected: {COMPLAINT}. Reply again, fixing it."
        )


async def test_a_user_that_keeps_volunteering_fails_the_episode() -> None:
    async with episode_with_user([LEAK] * 3) as env:
        result = await env.step(says("Happy to help with the weather."))
        assert result.done and env.episode.status == "failed"
        assert (env.episode.end_reason or "").endswith(COMPLAINT)
        assert not any(FACT in (m.content or "") for m in env.episode.messages if m.role == "user")


async def test_a_fact_the_agent_asked_for_is_given() -> None:
    async with episode_with_user([LEAK]) as env:
        result = await env.step(says("Which city are you in?"))
        assert result.messages[0].content == f"I am in {FACT}."
        assert [call.error for call in env.episode.sim_calls] == [None]


async def test_the_user_never_names_a_function() -> None:
    named = Reply(content=json.dumps({"reply": "Just run get_weather.", "done": False}))
    async with episode_with_user([named, CLEAN]) as env:
        await env.step(says("How can I help?"))
        assert env.episode.sim_calls[0].error == "the user must not name functions (get_weather)"
        assert env.episode.messages[-1].content == "I would like today's weather."


async def test_the_user_sees_the_conversation_but_not_the_tool_traffic() -> None:
    tool_result = Reply(content=json.dumps({"temperature": 3.5, "summary": "sleet"}))
    async with episode_with_user([tool_result, CLEAN]) as env:
        call = ToolCall(name="get_weather", arguments={"city": FACT})
        await env.step(Message(role="assistant", tool_calls=[call]))
        await env.step(says("It is 3.5 degrees."))
        seen = env.episode.sim_calls[-1].messages[1]["content"]
        assert "Assistant: It is 3.5 degrees." in seen
        assert f"User: {make_task().initial_message}" in seen
        assert "sleet" not in seen and "get_weather" not in seen


async def test_a_reply_that_ignores_the_question_about_a_fact_is_asked_again() -> None:
    async with episode_with_user([CLEAN, LEAK]) as env:
        result = await env.step(says("Which city are you in?"))
        assert result.messages[0].content == f"I am in {FACT}."
        assert env.episode.sim_calls[0].error == (
            "the reply does not answer the question about city; give that detail from your facts"
        )


async def test_a_placeholder_in_a_reply_is_rejected() -> None:
    blank = Reply(content=json.dumps({"reply": "Hello [user], any news?", "done": False}))
    async with episode_with_user([blank, CLEAN]) as env:
        await env.step(says("How can I help?"))
        assert env.episode.sim_calls[0].error == (
            'the reply has a placeholder "[user]"; write the real words a customer would say, '
            "with no brackets or blanks to fill"
        )
        assert env.episode.messages[-1].content == "I would like today's weather."


async def test_a_user_speaking_as_the_assistant_is_rejected() -> None:
    swapped = Reply(content=json.dumps({"reply": "How can I help you today?", "done": False}))
    async with episode_with_user([swapped, CLEAN]) as env:
        await env.step(says("Hello."))
        assert env.episode.sim_calls[0].error == (
            "the reply speaks as the assistant; you are the customer: say what you want, "
            "in the first person"
        )
