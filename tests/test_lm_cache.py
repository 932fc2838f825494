from __future__ import annotations

import asyncio

import pytest

from trustee_rl.lm.base import LMError
from trustee_rl.lm.cache import CachedLM
from trustee_rl.lm.openai_http import OpenAIHTTPLM
from trustee_rl.testing.openai_server import LoopbackOpenAIServer, Reply, ScriptedResponder

MESSAGES = [{"role": "user", "content": "hi"}]


async def test_seeded_repeats_share_one_backend_call_and_cost_nothing() -> None:
    with LoopbackOpenAIServer(delay_s=0.05) as server:
        lm = CachedLM(OpenAIHTTPLM(server.base_url, model="m"))
        first, second, third = await asyncio.gather(
            *(lm.complete(MESSAGES, seed=3) for _ in range(3))
        )
        other_seed = await lm.complete(MESSAGES, seed=4)
        await lm.aclose()
    assert len(server.requests) == 2
    assert first.text == second.text == third.text
    assert lm.hits == 2
    assert sorted(
        [
            first.usage.completion_tokens,
            second.usage.completion_tokens,
            third.usage.completion_tokens,
        ]
    )[:2] == [0, 0]
    assert other_seed.usage.completion_tokens > 0


async def test_unseeded_calls_and_failures_are_not_cached() -> None:
    replies = [
        Reply(content="a"),
        Reply(content="b"),
        Reply(status=400, content="bad"),
        Reply(content="c"),
    ]
    with LoopbackOpenAIServer(ScriptedResponder(replies)) as server:
        lm = CachedLM(OpenAIHTTPLM(server.base_url, model="m"))
        assert (await lm.complete(MESSAGES)).text == "a"
        assert (await lm.complete(MESSAGES)).text == "b"
        with pytest.raises(LMError):
            await lm.complete(MESSAGES, seed=1)
        assert (await lm.complete(MESSAGES, seed=1)).text == "c"
        await lm.aclose()
    assert len(server.requests) == 4
