"""The tool simulator: schema checks without the LM, one result per distinct call, replayable."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from trustee_rl.lm.openai_http import OpenAIHTTPLM
from trustee_rl.schema import Message, SimCall, ToolCall
from trustee_rl.sim.structured import SimulatorContext
from trustee_rl.sim.tools import ToolSimulator
from trustee_rl.testing.openai_server import LoopbackOpenAIServer, Reply

from .conftest import make_task


def seeded_weather(request: dict[str, Any]) -> Reply:
    """A backend whose answer is a function of the request's seed alone."""
    seed = int(request["seed"])
    return Reply(content=json.dumps({"temperature": seed % 40, "summary": f"seed {seed}"}))


ToolSimulators = Callable[[int, list[SimCall]], ToolSimulator]  # (episode seed, its calls)


@asynccontextmanager
async def tool_simulators() -> AsyncIterator[tuple[ToolSimulators, LoopbackOpenAIServer]]:
    """A factory of per-episode tool simulators over one loopback server."""
    with LoopbackOpenAIServer(seeded_weather) as server:
        lm = OpenAIHTTPLM(server.base_url, model="sim", structured_output="json_schema")

        def simulator(seed: int, calls: list[SimCall]) -> ToolSimulator:
            return ToolSimulator(lm, make_task(), SimulatorContext(seed, calls.append))

        try:
            yield simulator, server
        finally:
            await lm.aclose()


def weather(call_id: str = "c1", **arguments: Any) -> ToolCall:
    return ToolCall(id=call_id, name="get_weather", arguments=arguments)


async def results(tools: ToolSimulator, *calls: ToolCall) -> list[Any]:
    messages: list[Message] = [await tools.execute(call) for call in calls]
    return [json.loads(message.content or "") for message in messages]


async def test_an_identical_call_returns_the_identical_result_without_the_lm() -> None:
    async with tool_simulators() as (simulator, server):
        calls: list[SimCall] = []
        tools = simulator(5, calls)
        first, other, again = await results(
            tools, weather(city="Oslo"), weather(city="Rome"), weather("c9", city="Oslo")
        )
        assert again == first and other != first
        assert len(server.requests) == len(calls) == 2
        # The second call is made with the first one's result in view.
        assert json.dumps(first) in server.requests[1]["messages"][1]["content"]


async def test_the_same_seed_replays_the_same_results_in_any_order() -> None:
    async with tool_simulators() as (simulator, _):
        oslo, rome = weather(city="Oslo"), weather(city="Rome")
        played = await results(simulator(5, []), oslo, rome)
        replayed = await results(simulator(5, []), rome, oslo)
        assert replayed == played[::-1]
        assert await results(simulator(6, []), oslo, rome) != played


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (ToolCall(name="get_weather", parse_error="not JSON"), "could not parse the tool call"),
        (ToolCall(name="launch_rocket"), "unknown tool 'launch_rocket'"),
        (weather(city="Oslo", unit="kelvin"), "invalid arguments for get_weather at unit"),
        (weather(unit="celsius"), "invalid arguments for get_weather at arguments"),
    ],
)
async def test_a_malformed_call_gets_an_error_result_without_the_lm(
    call: ToolCall, error: str
) -> None:
    async with tool_simulators() as (simulator, server):
        calls: list[SimCall] = []
        message = await simulator(5, calls).execute(call)
        assert message.role == "tool" and message.tool_call_id == call.id
        assert json.loads(message.content or "")["error"].startswith(error)
        assert server.requests == [] and calls == []
