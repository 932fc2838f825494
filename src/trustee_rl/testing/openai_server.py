"""Scripted and schema-driven responders behind the loopback OpenAI-compatible server of lm/serve.py,
for tests and benchmarks.

Run one in the foreground with `python -m trustee_rl.testing.openai_server --port 8000 --delay 0.2`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from trustee_rl.lm.serve import OpenAIServer, Reply, Responder, write_json

__all__ = [
    "AgentResponder",
    "LoopbackOpenAIServer",
    "Reply",
    "Responder",
    "SchemaResponder",
    "ScriptedResponder",
    "add_server_arguments",
    "instance_for_schema",
    "is_structured",
    "serve_until_interrupted",
    "server_options",
]

_WORDS = ("alpha", "bravo", "cedar", "delta", "ember", "fjord", "garnet", "harbor", "iris")
# Recursive schemas stop growing optional parts below this depth and give up far below it.
_OPTIONAL_DEPTH = 4
_MAX_DEPTH = 32
_PROMPTED_SCHEMA_MARKER = "JSON schema:"
# What vLLM answers (HTTP 400) to `tool_choice: auto` when started without a tool parser.
TOOL_CHOICE_REFUSAL = (
    '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
)


class SchemaResponder:
    """Answers deterministically (per request messages and seed) with schema-valid output.

    With `response_format` it returns an instance of that schema; with `tools`, one call to a
    tool it picks; with a schema stated in a message after "JSON schema:" (prompt-mode clients),
    an instance of that; otherwise a short sentence.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def __call__(self, request: dict[str, Any]) -> Reply:
        rng = random.Random(_request_seed(request, self.seed))
        schema = _response_format_schema(request)
        if schema is not None:
            return Reply(content=json.dumps(instance_for_schema(schema, rng)))
        tools = request.get("tools")
        if tools:
            function = rng.choice(tools)["function"]
            parameters = function.get("parameters") or {"type": "object", "properties": {}}
            arguments = instance_for_schema(parameters, rng)
            return Reply(tool_calls=[{"name": function["name"], "arguments": arguments}])
        schema = _prompted_schema(request)
        if schema is not None:
            return Reply(content=json.dumps(instance_for_schema(schema, rng)))
        return Reply(content=f"This is loopback reply {rng.randrange(1_000_000)}.")


class AgentResponder:
    """Plays a tool-using agent as well as the simulators: with `tools` on offer it calls one,
    and once a tool result is in it answers the user in text; anything else goes to SchemaResponder.
    Lets a whole episode run against one loopback server."""

    def __init__(self, seed: int = 0) -> None:
        self.schema = SchemaResponder(seed)

    def __call__(self, request: dict[str, Any]) -> Reply:
        messages = request.get("messages") or [{}]
        if request.get("tools") and messages[-1].get("role") == "tool":
            return Reply(content="Here is what I found: " + str(messages[-1].get("content"))[:80])
        return self.schema(request)


class ScriptedResponder:
    """Answers with `replies` in order; raises (so the server answers 500) once they run out."""

    def __init__(self, replies: list[Reply]) -> None:
        self._replies = list(replies)
        self._lock = threading.Lock()

    def __call__(self, request: dict[str, Any]) -> Reply:
        with self._lock:
            if not self._replies:
                raise RuntimeError("ScriptedResponder has no replies left")
            return self._replies.pop(0)


def _request_seed(request: dict[str, Any], seed: int) -> int:
    text = json.dumps(request.get("messages", []), sort_keys=True) + f"#{seed}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def is_structured(request: dict[str, Any]) -> bool:
    """Whether the request asks for JSON output, in `response_format` or stated in a message."""
    return _response_format_schema(request) is not None or _prompted_schema(request) is not None


def _response_format_schema(request: dict[str, Any]) -> dict[str, Any] | None:
    response_format = request.get("response_format") or {}
    if response_format.get("type") != "json_schema":
        return None
    schema = response_format.get("json_schema", {}).get("schema")
    return schema if isinstance(schema, dict) else None


def _prompted_schema(request: dict[str, Any]) -> dict[str, Any] | None:
    for message in request.get("messages", []):
        content = message.get("content")
        if not isinstance(content, str) or _PROMPTED_SCHEMA_MARKER not in content:
            continue
        after = content.split(_PROMPTED_SCHEMA_MARKER, 1)[1]
        start = after.find("{")
        if start < 0:
            continue
        try:
            schema, _ = json.JSONDecoder().raw_decode(after, start)
        except ValueError:
            continue
        if isinstance(schema, dict):
            return schema
    return None


def instance_for_schema(schema: dict[str, Any], rng: random.Random) -> Any:
    """Build a value valid against `schema` (the subset simulators and tools use), drawn from rng.

    Patterns and formats other than a few common ones are not honoured.
    """
    return _InstanceBuilder(schema, rng).build(schema, 0)


class _InstanceBuilder:
    def __init__(self, root: dict[str, Any], rng: random.Random) -> None:
        self.root = root
        self.rng = rng

    def build(self, schema: dict[str, Any] | bool, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise ValueError("schema recursion too deep to build an instance")
        if schema is True:
            return self._string({})
        if schema is False:
            raise ValueError("no value is valid against the schema `false`")
        schema = self._resolved(schema)
        if "const" in schema:
            return schema["const"]
        for key in ("examples", "enum"):
            if schema.get(key):
                return self.rng.choice(schema[key])
        for key in ("anyOf", "oneOf"):
            if schema.get(key):
                return self.build(schema[key][0], depth + 1)
        return self._typed(schema, _type_of(schema), depth)

    def _resolved(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Inline a local $ref and fold allOf into one schema (siblings win over the target)."""
        seen: set[str] = set()
        while "$ref" in schema:
            ref = schema["$ref"]
            if ref in seen:
                raise ValueError(f"$ref cycle through {ref!r}")
            seen.add(ref)
            target = self._pointer(ref)
            schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        for part in schema.get("allOf", []):
            schema = _merged(
                {k: v for k, v in schema.items() if k != "allOf"}, self._resolved(part)
            )
        return schema

    def _pointer(self, ref: str) -> dict[str, Any]:
        if not ref.startswith("#"):
            raise ValueError(f"only local $ref is supported, not {ref!r}")
        node: Any = self.root
        for part in ref.lstrip("#").split("/")[1:]:
            node = node[part.replace("~1", "/").replace("~0", "~")]
        if not isinstance(node, dict):
            raise ValueError(f"$ref {ref!r} does not point at a schema")
        return node

    def _typed(self, schema: dict[str, Any], kind: str, depth: int) -> Any:
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth)
        if kind == "integer":
            return self._integer(schema)
        if kind == "number":
            return self._number(schema)
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        return self._string(schema)

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties: dict[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", []))
        extra = schema.get("additionalProperties", True)
        filler = extra if isinstance(extra, dict) else True
        value: dict[str, Any] = {}
        for name, subschema in properties.items():
            wanted = name in required or (depth < _OPTIONAL_DEPTH and self.rng.random() < 0.5)
            if wanted:
                value[name] = self.build(subschema, depth + 1)
        for name in sorted(required - set(properties)):
            value[name] = self.build(filler, depth + 1)
        while len(value) < schema.get("minProperties", 0) and extra is not False:
            value[f"key_{len(value)}"] = self.build(filler, depth + 1)
        return value

    def _array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        cap = schema.get("maxItems")
        low = schema.get("minItems", 0 if depth >= _OPTIONAL_DEPTH or cap == 0 else 1)
        high = low if depth >= _OPTIONAL_DEPTH else max(low, cap if cap is not None else low + 2)
        count = self.rng.randint(low, high)
        items = schema.get("items", True)
        value: list[Any] = []
        for _ in range(count * 10 if schema.get("uniqueItems") else count):
            item = self.build(items, depth + 1)
            if not (schema.get("uniqueItems") and item in value):
                value.append(item)
            if len(value) == count:
                break
        return value

    def _integer(self, schema: dict[str, Any]) -> int:
        low, high = _bounds(schema, integral=True)
        return self.rng.randint(int(low), int(high))

    def _number(self, schema: dict[str, Any]) -> float:
        low, high = _bounds(schema, integral=False)
        value = round(self.rng.uniform(low, high), 2)
        if not _within(value, schema):
            value = (low + high) / 2
        return value

    def _string(self, schema: dict[str, Any]) -> str:
        formatted = _FORMATS.get(schema.get("format", ""))
        if formatted is not None:
            return formatted
        low = schema.get("minLength", 1)
        high = schema.get("maxLength", max(low, 24))
        # Room for a sentence gets one (the simulator's coherence checks refuse scraps there).
        count = self.rng.randint(5, 8) if low >= 10 else self.rng.randint(1, 3)
        text = " ".join(self.rng.choice(_WORDS) for _ in range(count))
        while len(text) < low:
            text += " " + self.rng.choice(_WORDS)
        return text[:high]


_FORMATS = {
    "date": "2024-05-17",
    "date-time": "2024-05-17T09:30:00Z",
    "time": "09:30:00Z",
    "email": "someone@example.com",
    "uri": "https://example.com/item",
    "uuid": "123e4567-e89b-12d3-a456-426614174000",
}


def _type_of(schema: dict[str, Any]) -> str:
    declared = schema.get("type")
    if isinstance(declared, list):
        return next((kind for kind in declared if kind != "null"), "null")
    if isinstance(declared, str):
        return declared
    if {"properties", "required", "additionalProperties"} & schema.keys():
        return "object"
    if {"items", "minItems", "maxItems"} & schema.keys():
        return "array"
    if {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"} & schema.keys():
        return "number"
    return "string"


def _merged(base: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    merged = {**base, **part}
    if "properties" in base or "properties" in part:
        merged["properties"] = {**base.get("properties", {}), **part.get("properties", {})}
    if "required" in base or "required" in part:
        merged["required"] = sorted({*base.get("required", []), *part.get("required", [])})
    return merged


def _bounds(schema: dict[str, Any], integral: bool) -> tuple[float, float]:
    """The tightest [low, high] the schema allows, defaulting to a 100-wide range near 0."""
    lows: list[float] = []
    highs: list[float] = []
    if "minimum" in schema:
        lows.append(math.ceil(schema["minimum"]) if integral else schema["minimum"])
    if "exclusiveMinimum" in schema:
        bound = schema["exclusiveMinimum"]
        lows.append(math.floor(bound) + 1 if integral else bound)
    if "maximum" in schema:
        highs.append(math.floor(schema["maximum"]) if integral else schema["maximum"])
    if "exclusiveMaximum" in schema:
        bound = schema["exclusiveMaximum"]
        highs.append(math.ceil(bound) - 1 if integral else bound)
    high_given = min(highs) if highs else None
    low = max(lows) if lows else min(0, high_given - 100) if high_given is not None else 0
    high = high_given if high_given is not None else low + 100
    return low, max(low, high)


def _within(value: float, schema: dict[str, Any]) -> bool:
    return bool(
        value >= schema.get("minimum", value)
        and value <= schema.get("maximum", value)
        and value > schema.get("exclusiveMinimum", value - 1)
        and value < schema.get("exclusiveMaximum", value + 1)
    )


class LoopbackOpenAIServer(OpenAIServer):
    """The lm/serve.py transport with what tests and benchmarks need besides: a default
    `SchemaResponder`, a delay per request (each request sleeps on its own thread, so concurrent
    requests overlap as against a batching server), optional refusals of `response_format` and
    of `tool_choice` (as vLLM without a tool parser), an optional `api_key` that chat requests
    must bear (HTTP 401 otherwise, as vLLM started with --api-key), and `requests`, every chat
    request body received."""

    def __init__(
        self,
        responder: Responder | None = None,
        delay_s: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        model: str = "loopback-model",
        supports_response_format: bool = True,
        supports_tool_choice: bool = True,
        api_key: str | None = None,
    ) -> None:
        super().__init__(responder or SchemaResponder(), host=host, port=port, model=model)
        self.api_key = api_key
        self.delay_s = delay_s
        self.supports_response_format = supports_response_format
        self.supports_tool_choice = supports_tool_choice
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def respond(self, handler: BaseHTTPRequestHandler, request: dict[str, Any]) -> None:
        bearer = handler.headers.get("Authorization")
        if self.api_key is not None and bearer != f"Bearer {self.api_key}":
            write_json(handler, 401, {"error": {"message": "invalid API key"}})
            return
        super().respond(handler, request)

    def record(self, request: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(request)

    def reply(self, request: dict[str, Any]) -> Reply:
        self.record(request)
        time.sleep(self.delay_s)
        if not self.supports_response_format and "response_format" in request:
            return Reply(content="response_format is not supported", status=400)
        if not self.supports_tool_choice and "tool_choice" in request:
            return Reply(content=TOOL_CHOICE_REFUSAL, status=400)
        return super().reply(request)


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The command-line options of a loopback server; `server_options` reads them back."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds each request sleeps")
    parser.add_argument("--model", default="loopback-model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-response-format", action="store_true", help="reject response_format with a 400"
    )
    parser.add_argument(
        "--no-tool-choice", action="store_true", help="reject tool_choice with a 400, as vLLM can"
    )
    parser.add_argument(
        "--agent", action="store_true", help="also play a tool-using agent (AgentResponder)"
    )


def server_options(args: argparse.Namespace) -> dict[str, Any]:
    """The `LoopbackOpenAIServer` arguments the options of `add_server_arguments` give."""
    return {
        "responder": AgentResponder(args.seed) if args.agent else SchemaResponder(args.seed),
        "delay_s": args.delay,
        "host": args.host,
        "port": args.port,
        "model": args.model,
        "supports_response_format": not args.no_response_format,
        "supports_tool_choice": not args.no_tool_choice,
    }


def serve_until_interrupted(server: LoopbackOpenAIServer) -> None:
    server.start()
    print(f"serving {server.base_url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a loopback OpenAI-compatible chat API.")
    add_server_arguments(parser)
    serve_until_interrupted(LoopbackOpenAIServer(**server_options(parser.parse_args(argv))))


if __name__ == "__main__":
    main()
