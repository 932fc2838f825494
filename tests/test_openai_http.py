"""OpenAIHTTPLM against the loopback server, plus the server's schema-instance generator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import pytest

from trustee_rl.lm.base import LM, LMError, LMUnavailable
from trustee_rl.lm.openai_http import OpenAIHTTPLM
from trustee_rl.testing.faults import TRANSPORT_FAULTS, FaultShares, FaultyOpenAIServer
from trustee_rl.testing.openai_server import (
    LoopbackOpenAIServer,
    Reply,
    SchemaResponder,
    ScriptedResponder,
    instance_for_schema,
)

PERSON: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 2, "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {
            "type": "array",
            "items": {"type": "string", "enum": ["a", "b", "c"]},
            "minItems": 1,
            "maxItems": 3,
        },
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}
HELLO: list[dict[str, Any]] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "hello"},
]


@contextlib.asynccontextmanager
async def _lm(server: LoopbackOpenAIServer, **kwargs: Any) -> AsyncIterator[OpenAIHTTPLM]:
    kwargs.setdefault("model", "loopback-model")
    lm = OpenAIHTTPLM(server.base_url, backoff_base_s=0.001, **kwargs)
    try:
        yield lm
    finally:
        await lm.aclose()


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_satisfies_lm_protocol() -> None:
    with LoopbackOpenAIServer() as server:
        async with _lm(server) as lm:
            assert isinstance(lm, LM)
            assert lm.native_tools


async def test_structured_output_via_response_format() -> None:
    with LoopbackOpenAIServer() as server:
        async with _lm(server) as lm:
            completion = await lm.complete(HELLO, json_schema=PERSON)
    jsonschema.validate(json.loads(completion.text), PERSON)
    response_format = server.requests[0]["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"] == {"name": "output", "schema": PERSON, "strict": True}


async def test_falls_back_to_prompt_when_response_format_rejected() -> None:
    reply = Reply(content='Here you go:\n```json\n{"name": "Ada", "age": 36, "tags": ["a"],}\n```')
    responder = ScriptedResponder([reply, reply])
    with LoopbackOpenAIServer(responder, supports_response_format=False) as server:
        async with _lm(server) as lm:
            first = await lm.complete(HELLO, json_schema=PERSON)
            second = await lm.complete(HELLO, json_schema=PERSON)
    expected = json.dumps({"name": "Ada", "age": 36, "tags": ["a"]})
    assert first.text == second.text == expected
    rejected, prompted, later = server.requests
    assert "response_format" in rejected
    for request in (prompted, later):
        assert "response_format" not in request
        system = request["messages"][0]
        assert system["role"] == "system"
        assert system["content"].startswith("You are terse.")
        assert json.dumps(PERSON) in system["content"]
    assert HELLO[0]["content"] == "You are terse."


async def test_prompt_mode_inserts_system_message_and_default_responder_follows_it() -> None:
    with LoopbackOpenAIServer(supports_response_format=False) as server:
        async with _lm(server, structured_output="prompt") as lm:
            completion = await lm.complete([{"role": "user", "content": "hi"}], json_schema=PERSON)
    jsonschema.validate(json.loads(completion.text), PERSON)
    [request] = server.requests
    assert [m["role"] for m in request["messages"]] == ["system", "user"]


async def test_forced_json_schema_mode_raises_when_rejected() -> None:
    with LoopbackOpenAIServer(supports_response_format=False) as server:
        async with _lm(server, structured_output="json_schema") as lm:
            with pytest.raises(LMError, match="400"):
                await lm.complete(HELLO, json_schema=PERSON)
    assert len(server.requests) == 1


async def test_malformed_json_repaired_locally() -> None:
    responder = ScriptedResponder([Reply(content='{\'ignored\': 1} {"ok": True, "n": [1, 2,')])
    with LoopbackOpenAIServer(responder) as server:
        async with _lm(server) as lm:
            completion = await lm.complete(HELLO, json_schema={"type": "object"})
    assert completion.text == json.dumps({"ok": True, "n": [1, 2]})
    assert len(server.requests) == 1


async def test_unreadable_json_gets_one_repair_round() -> None:
    responder = ScriptedResponder(
        [
            Reply(content="I would rather not."),
            Reply(content='{"name": "Ada", "age": 3, "tags": []}'),
        ]
    )
    with LoopbackOpenAIServer(responder) as server:
        async with _lm(server, structured_output="prompt") as lm:
            completion = await lm.complete(HELLO, json_schema=PERSON)
    assert json.loads(completion.text) == {"name": "Ada", "age": 3, "tags": []}
    first, repair = server.requests
    assert repair["messages"][: len(first["messages"])] == first["messages"]
    assert repair["messages"][-2] == {"role": "assistant", "content": "I would rather not."}
    assert repair["messages"][-1]["role"] == "user"
    assert completion.usage.completion_tokens == 4 + 9


async def test_failed_repair_round_raises() -> None:
    responder = ScriptedResponder([Reply(content="nope"), Reply(content="still nope")])
    with LoopbackOpenAIServer(responder) as server:
        async with _lm(server, structured_output="prompt") as lm:
            with pytest.raises(LMError, match="repair"):
                await lm.complete(HELLO, json_schema=PERSON)
    assert len(server.requests) == 2


async def test_native_tool_calls_are_parsed() -> None:
    calls: list[dict[str, Any]] = [
        {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}},
        {"name": "get_weather", "arguments": '{"city": "Par'},
    ]
    with LoopbackOpenAIServer(ScriptedResponder([Reply(tool_calls=calls)])) as server:
        async with _lm(server) as lm:
            completion = await lm.complete(HELLO, tools=[WEATHER_TOOL])
    good, bad = completion.tool_calls
    assert (good.name, good.arguments, good.parse_error) == (
        "get_weather",
        {"city": "Paris", "unit": "celsius"},
        None,
    )
    assert good.id.startswith("call_")
    assert bad.arguments == {}
    assert bad.parse_error
    assert completion.finish_reason == "tool_calls"
    [request] = server.requests
    assert request["tools"] == [WEATHER_TOOL]
    assert request["tool_choice"] == "auto"


async def test_default_responder_calls_tools_with_valid_arguments() -> None:
    with LoopbackOpenAIServer() as server:
        async with _lm(server) as lm:
            completion = await lm.complete(HELLO, tools=[WEATHER_TOOL])
    [call] = completion.tool_calls
    assert call.name == "get_weather"
    jsonschema.validate(call.arguments, WEATHER_TOOL["function"]["parameters"])


async def test_usage_and_request_fields_recorded() -> None:
    responder = ScriptedResponder([Reply(content="x" * 40)])
    with LoopbackOpenAIServer(responder, delay_s=0.05) as server:
        async with _lm(server) as lm:
            completion = await lm.complete(
                HELLO, max_tokens=32, temperature=0.0, seed=7, stop=["\n\n"]
            )
    assert completion.text == "x" * 40
    assert completion.usage.completion_tokens == 10
    assert completion.usage.prompt_tokens >= 1
    assert completion.latency_s >= 0.05
    assert completion.finish_reason == "stop"
    assert completion.model == "loopback-model"
    [request] = server.requests
    assert request["max_tokens"] == 32
    assert request["temperature"] == 0.0
    assert request["seed"] == 7
    assert request["stop"] == ["\n\n"]
    assert request["messages"] == HELLO


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
async def test_retries_transient_errors_then_succeeds(status: int) -> None:
    replies = [Reply(status=status), Reply(status=status), Reply(content="fine")]
    with LoopbackOpenAIServer(ScriptedResponder(replies)) as server:
        async with _lm(server) as lm:
            completion = await lm.complete(HELLO)
    assert completion.text == "fine"
    assert len(server.requests) == 3


async def test_gives_up_after_max_retries() -> None:
    replies = [Reply(status=500, content="boom")] * 3
    with LoopbackOpenAIServer(ScriptedResponder(replies)) as server:
        async with _lm(server, max_retries=2) as lm:
            with pytest.raises(LMError, match=r"gave up after 3 tries: HTTP 500.*boom") as caught:
                await lm.complete(HELLO)
    assert not isinstance(caught.value, LMUnavailable)
    assert len(server.requests) == 3


def _faulty(script: list[str | None], **options: Any) -> FaultyOpenAIServer:
    """A server that serves `script`'s faults first and none after; 429s ask for a short wait."""
    options.setdefault("retry_after_s", 0.01)
    return FaultyOpenAIServer(shares=FaultShares(), script=script, **options)


@pytest.mark.parametrize("fault", TRANSPORT_FAULTS)
async def test_transport_fault_is_retried_then_succeeds(fault: str) -> None:
    with _faulty([fault, fault, None], hang_s=5) as server:
        async with _lm(server, timeout_s=0.3) as lm:
            completion = await lm.complete(HELLO, json_schema=PERSON)
    jsonschema.validate(json.loads(completion.text), PERSON)
    assert server.injected == {fault: 2}
    assert len(server.requests) == 3


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        ("truncated", "non-JSON answer"),
        ("error", "HTTP 500"),
        ("rate_limited", "HTTP 429"),
        ("hang", "no answer within 0.3s"),
        ("drop", "lost its connection"),
    ],
)
async def test_gives_up_on_a_lasting_fault_naming_its_cause(fault: str, cause: str) -> None:
    with _faulty([fault] * 3, hang_s=5) as server:
        async with _lm(server, timeout_s=0.3, max_retries=2) as lm:
            with pytest.raises(LMError) as caught:
                await lm.complete(HELLO)
    message = str(caught.value)
    assert message.startswith("gave up after 3 tries: ")
    assert cause in message
    assert "\n" not in message
    assert not isinstance(caught.value, LMUnavailable)
    assert server.injected == {fault: 3}


@pytest.mark.parametrize("as_date", [False, True], ids=["seconds", "http-date"])
async def test_waits_as_long_as_retry_after_asks(as_date: bool) -> None:
    # An HTTP date has whole seconds, so 1.5 s ahead is more than 0.5 s ahead whenever it is sent.
    wait = 1.5 if as_date else 0.4
    with _faulty(["rate_limited", None], retry_after_s=wait, retry_after_date=as_date) as server:
        async with _lm(server) as lm:
            started = time.perf_counter()
            completion = await lm.complete(HELLO)
            elapsed = time.perf_counter() - started
    assert completion.text
    assert elapsed >= (0.5 if as_date else 0.4)
    assert len(server.requests) == 2


async def test_retry_after_is_bounded_by_the_clients_max_backoff() -> None:
    with _faulty(["rate_limited"] * 2, retry_after_s=60) as server:
        async with _lm(server, backoff_max_s=0.1) as lm:
            started = time.perf_counter()
            completion = await lm.complete(HELLO)
            elapsed = time.perf_counter() - started
    assert completion.text
    assert 0.2 <= elapsed < 2
    assert len(server.requests) == 3


async def test_refused_tool_choice_is_dropped_once_and_for_good() -> None:
    with LoopbackOpenAIServer(supports_tool_choice=False) as server:
        async with _lm(server) as lm:
            first = await lm.complete(HELLO, tools=[WEATHER_TOOL])
            second = await lm.complete(HELLO, tools=[WEATHER_TOOL])
    assert [call.name for call in first.tool_calls + second.tool_calls] == ["get_weather"] * 2
    refused, retried, later = server.requests
    assert refused["tool_choice"] == "auto"
    for request in (retried, later):
        assert "tool_choice" not in request
        assert request["tools"] == [WEATHER_TOOL]


async def test_other_bad_requests_with_tools_are_not_retried() -> None:
    responder = ScriptedResponder([Reply(status=400, content="messages must not be empty")])
    with LoopbackOpenAIServer(responder) as server:
        async with _lm(server) as lm:
            with pytest.raises(LMError, match=r"400.*messages must not be empty"):
                await lm.complete(HELLO, tools=[WEATHER_TOOL])
    [request] = server.requests
    assert request["tool_choice"] == "auto"


async def test_client_errors_are_not_retried() -> None:
    responder = ScriptedResponder([Reply(status=404, content="no such model")])
    with LoopbackOpenAIServer(responder) as server:
        async with _lm(server) as lm:
            with pytest.raises(LMError, match=r"404.*no such model"):
                await lm.complete(HELLO)
    assert len(server.requests) == 1


async def test_unreachable_server_raises_unavailable_quickly() -> None:
    base_url = f"http://127.0.0.1:{_closed_port()}/v1"
    lm = OpenAIHTTPLM(base_url, model="m", max_retries=2, backoff_base_s=0.001)
    started = time.perf_counter()
    try:
        with pytest.raises(LMUnavailable, match="cannot reach") as caught:
            await lm.complete(HELLO)
    finally:
        await lm.aclose()
    assert time.perf_counter() - started < 5
    assert base_url in str(caught.value)
    assert "\n" not in str(caught.value)


async def test_concurrent_requests_overlap() -> None:
    with LoopbackOpenAIServer(delay_s=0.2) as server:
        async with _lm(server) as lm:
            started = time.perf_counter()
            completions = await asyncio.gather(
                *(lm.complete([{"role": "user", "content": f"hi {i}"}]) for i in range(64))
            )
            elapsed = time.perf_counter() - started
    assert len(completions) == len(server.requests) == 64
    assert all(completion.text for completion in completions)
    assert elapsed < 2.0


async def test_model_resolved_from_models_endpoint() -> None:
    with LoopbackOpenAIServer(model="served-model") as server:
        async with _lm(server, model=None) as lm:
            assert lm.model == ""
            completion = await lm.complete(HELLO)
            assert lm.model == "served-model"
    assert completion.model == "served-model"
    assert server.requests[0]["model"] == "served-model"


async def test_schema_responder_is_deterministic() -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "output", "schema": PERSON}}
    request: dict[str, Any] = {"messages": HELLO, "response_format": response_format}
    assert SchemaResponder(3)(request) == SchemaResponder(3)(request)
    other_messages = [*HELLO, {"role": "user", "content": "again"}]
    changed = {**request, "messages": other_messages}
    replies = {SchemaResponder(seed)(changed).content for seed in range(8)}
    assert len(replies) > 1


SCHEMAS: list[dict[str, Any]] = [
    PERSON,
    {"type": "string"},
    {"type": "string", "minLength": 30, "maxLength": 35},
    {"type": "string", "maxLength": 3},
    {"type": "string", "format": "date-time"},
    {"type": "integer", "minimum": 10, "maximum": 12},
    {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 3},
    {"type": "integer", "maximum": -50},
    {"type": "number", "minimum": 0.5, "maximum": 0.75},
    {"type": "number", "exclusiveMinimum": 1.0, "exclusiveMaximum": 1.01},
    {"type": "boolean"},
    {"type": "null"},
    {"type": ["string", "null"]},
    {"const": {"fixed": [1, 2]}},
    {"enum": ["red", 3, None]},
    {"type": "string", "examples": ["2024-01-01"]},
    {"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 4},
    {"type": "array", "items": {"type": "boolean"}, "maxItems": 0},
    {"type": "array", "items": {"enum": [1, 2, 3]}, "minItems": 3, "uniqueItems": True},
    {"anyOf": [{"type": "integer", "minimum": 5}, {"type": "string"}]},
    {"oneOf": [{"type": "boolean"}, {"type": "string"}]},
    {"allOf": [{"properties": {"a": {"type": "integer"}}, "required": ["a"]}, {"required": ["b"]}]},
    {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "required": ["a", "extra"],
        "additionalProperties": {"type": "integer"},
        "minProperties": 4,
    },
    {
        "type": "object",
        "$defs": {
            "point": {
                "type": "object",
                "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                "required": ["x", "y"],
                "additionalProperties": False,
            }
        },
        "properties": {
            "start": {"$ref": "#/$defs/point"},
            "path": {"type": "array", "items": {"$ref": "#/$defs/point"}, "minItems": 2},
        },
        "required": ["start", "path"],
    },
    {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {
                    "label": {"type": "string"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                },
                "required": ["label", "children"],
            }
        },
        "$ref": "#/$defs/node",
    },
    {"type": "object", "properties": {}, "additionalProperties": False},
    {},
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda schema: json.dumps(schema)[:40])
def test_instance_for_schema_is_valid(schema: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    for seed in range(20):
        instance = instance_for_schema(schema, random.Random(seed))
        json.dumps(instance)
        validator.validate(instance)


def test_instance_for_schema_prefers_examples() -> None:
    schema = {"type": "string", "examples": ["alpha-1", "alpha-2"]}
    values = {instance_for_schema(schema, random.Random(seed)) for seed in range(10)}
    assert values <= {"alpha-1", "alpha-2"}
