"""An LM backend for any OpenAI-compatible chat-completions server (vLLM, llama.cpp, SGLang)."""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import os
import random
import time
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field

from trustee_rl.lm.base import Completion, LMError, LMUnavailable
from trustee_rl.lm.json_repair import loads, parse_json_document
from trustee_rl.schema import ToolCall, Usage
from trustee_rl.sim.prompts import load_prompt

StructuredOutput = Literal["json_schema", "prompt", "auto"]

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_EXCERPT_CHARS = 200
# The schema instruction (prompt mode) and the repair request: all prompt text lives with the rest.
_JSON_OUTPUT = load_prompt("json_output")


class HTTPClientConfig(BaseModel):
    """How long an OpenAI-compatible client waits for a server and how often it tries again
    (settings key `http`, e.g. `--set http.timeout_s=30`)."""

    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(default=120.0, gt=0, description="seconds one request may take")
    max_retries: int = Field(
        default=4, ge=0, description="tries after the first, per request, on a transient failure"
    )
    backoff_max_s: float = Field(
        default=30.0, ge=0, description="the longest wait between tries, Retry-After included"
    )


class _ResponseFormatRejected(LMError):
    """The server refused `response_format`; it lacks native structured output."""


class _ToolChoiceRejected(LMError):
    """The server refused `tool_choice` (vLLM without --enable-auto-tool-choice does)."""


class OpenAIHTTPLM:
    """Chat completions over HTTP, with retries, bounded concurrency and structured output.

    A request is tried again, `max_retries` times at most, after HTTP 429/500/502/503/504, a
    connection that fails or drops, no answer within `timeout_s`, or an answer body that is not
    JSON; the wait doubles from `backoff_base_s` (jittered) unless the server names one in
    `Retry-After`, and never exceeds `backoff_max_s`. A server that refuses `tool_choice` is sent
    none from then on.

    `structured_output` picks how `json_schema` is honoured: "json_schema" sends it as
    `response_format`, "prompt" states it in the system message and parses the reply, "auto"
    tries the former and falls back to the latter for good once the server rejects it.
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        max_concurrency: int = 64,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        native_tools: bool = True,
        structured_output: StructuredOutput = "auto",
    ) -> None:
        _refuse_credentials(base_url)
        self.base_url = base_url.rstrip("/")
        # Empty until resolved from /models on first use when no model was named.
        self.model = model or ""
        self.native_tools = native_tools
        self.structured_output = structured_output
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._response_format_ok = structured_output != "prompt"
        self._tool_choice_ok = True
        self._rng = random.Random()
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._model_lock = asyncio.Lock()
        key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self._client = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(
                max_connections=max_concurrency, max_keepalive_connections=max_concurrency
            ),
        )

    async def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        json_schema: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
        max_tokens: int = 256,
        temperature: float = 0.7,
        seed: int | None = None,
        stop: list[str] | None = None,
    ) -> Completion:
        model = await self._resolve_model()
        started = time.perf_counter()
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if seed is not None:
            body["seed"] = seed
        if stop:
            body["stop"] = stop
        if tools:
            body["tools"] = tools
            if self._tool_choice_ok:
                body["tool_choice"] = "auto"
        if json_schema is None:
            data = await self._chat(body)
            return self._completion(data, _message_text(data), _usage(data), started)
        return await self._complete_structured(body, json_schema, started)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _complete_structured(
        self, body: dict[str, Any], schema: dict[str, Any], started: float
    ) -> Completion:
        if self._response_format_ok:
            native = {**body, "response_format": _response_format(schema)}
            try:
                data = await self._chat(native)
            except _ResponseFormatRejected:
                if self.structured_output == "json_schema":
                    raise
                self._response_format_ok = False
            else:
                return await self._clean_json(native, data, started)
        prompted = {**body, "messages": _with_schema_instruction(body["messages"], schema)}
        return await self._clean_json(prompted, await self._chat(prompted), started)

    async def _clean_json(
        self, body: dict[str, Any], data: dict[str, Any], started: float
    ) -> Completion:
        """Return the reply as clean JSON text, asking the model once to fix unreadable output."""
        text = _message_text(data)
        usage = _usage(data)
        try:
            document = parse_json_document(text)
        except ValueError as error:
            repair = {**body, "messages": _repair_messages(body["messages"], text, str(error))}
            data = await self._chat(repair)
            usage = usage + _usage(data)
            try:
                document = parse_json_document(_message_text(data))
            except ValueError as second:
                raise LMError(f"reply is not JSON after one repair round: {second}") from second
        return self._completion(data, json.dumps(document), usage, started)

    def _completion(
        self, data: dict[str, Any], text: str, usage: Usage, started: float
    ) -> Completion:
        choice = _first_choice(data)
        raw_calls = (choice.get("message") or {}).get("tool_calls") or []
        return Completion(
            text=text,
            model=str(data.get("model") or self.model),
            usage=usage,
            latency_s=time.perf_counter() - started,
            finish_reason=choice.get("finish_reason"),
            tool_calls=[_tool_call(raw) for raw in raw_calls if isinstance(raw, dict)],
        )

    async def _resolve_model(self) -> str:
        if self.model:
            return self.model
        async with self._model_lock:
            if not self.model:
                listing = await self._request("GET", "/models")
                try:
                    self.model = str(listing["data"][0]["id"])
                except (KeyError, IndexError, TypeError) as error:
                    raise LMError(f"{self.base_url}/models lists no model") from error
        return self.model

    async def _chat(self, body: dict[str, Any]) -> dict[str, Any]:
        async with self._semaphore:
            try:
                return await self._request("POST", "/chat/completions", body)
            except _ToolChoiceRejected:
                self._tool_choice_ok = False
                without = {key: value for key, value in body.items() if key != "tool_choice"}
                return await self._request("POST", "/chat/completions", without)

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Send one request, trying transient failures again; the last one's cause is raised."""
        url = self.base_url + path
        failure: LMError
        for attempt in range(self.max_retries + 1):
            server_wait: float | None = None
            try:
                response = await self._client.request(method, url, json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout) as error:
                failure = LMUnavailable(f"cannot reach {self.base_url}: {_one_line(error)}")
            except httpx.TimeoutException:
                failure = LMError(f"{method} {url} got no answer within {self.timeout_s}s")
            except httpx.TransportError as error:  # the connection dropped mid-request
                failure = LMError(f"{method} {url} lost its connection: {_one_line(error)}")
            else:
                if response.status_code < 400:
                    try:
                        return _json_body(response, url)
                    except LMError as error:  # a body cut short or garbled on the way
                        failure = error
                else:
                    failure = _status_error(response, url, body)
                    if response.status_code not in _RETRY_STATUSES:
                        raise failure
                    server_wait = _retry_after_s(response)
            if attempt < self.max_retries:
                await asyncio.sleep(self._wait(attempt, server_wait))
        tries = self.max_retries + 1
        raise type(failure)(f"gave up after {tries} tr{'y' if tries == 1 else 'ies'}: {failure}")

    def _wait(self, attempt: int, server_wait: float | None) -> float:
        if server_wait is not None:
            return min(self.backoff_max_s, server_wait)
        delay = min(self.backoff_max_s, self.backoff_base_s * 2.0**attempt)
        return delay * (0.5 + 0.5 * self._rng.random())


def _refuse_credentials(base_url: str) -> None:
    """A server URL is stored with the run, so a key must not ride in it."""
    parts = urlsplit(base_url)
    if parts.username is not None or parts.password is not None or parts.query:
        port = f":{parts.port}" if parts.port else ""
        shown = f"{parts.scheme}://{parts.hostname}{port}{parts.path}"
        raise ValueError(
            f"server URL {shown} carries credentials (user:password@ or a query): put the key in "
            "OPENAI_API_KEY or an API key file instead, as a URL is stored with the run"
        )


def _response_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }


def _with_schema_instruction(
    messages: list[dict[str, Any]], schema: dict[str, Any]
) -> list[dict[str, Any]]:
    instruction = _JSON_OUTPUT.text("schema_instruction", schema=json.dumps(schema))
    if messages and messages[0].get("role") == "system":
        system = messages[0]
        content = f"{system.get('content') or ''}\n\n{instruction}".lstrip()
        return [{**system, "content": content}, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]


def _repair_messages(
    messages: list[dict[str, Any]], bad_output: str, reason: str
) -> list[dict[str, Any]]:
    return [
        *messages,
        {"role": "assistant", "content": bad_output},
        {"role": "user", "content": _JSON_OUTPUT.text("repair_request", reason=reason)},
    ]


def _status_error(response: httpx.Response, url: str, body: dict[str, Any] | None) -> LMError:
    excerpt = _one_line(response.text)
    message = f"HTTP {response.status_code} from {url}: {excerpt}"
    status, text = response.status_code, response.text
    sent = body or {}
    named = text.lower().replace("_", " ")
    if status in (401, 403):  # a missing or wrong key: no retry, and no other request, will pass
        return LMUnavailable(message)
    if status == 400 and "tool_choice" in sent and "tool choice" in named:
        return _ToolChoiceRejected(message)
    if "response_format" in sent and (
        status == 400 or (status == 422 and "response_format" in text)
    ):
        return _ResponseFormatRejected(message)
    return LMError(message)


def _retry_after_s(response: httpx.Response) -> float | None:
    """The wait a `Retry-After` header asks for, in seconds or as an HTTP date; None without one."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # HTTP dates are GMT
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _json_body(response: httpx.Response, url: str) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError as error:
        raise LMError(f"non-JSON answer from {url}: {_one_line(response.text)}") from error
    if not isinstance(data, dict):
        raise LMError(f"unexpected answer from {url}: {_one_line(response.text)}")
    return data


def _first_choice(data: dict[str, Any]) -> dict[str, Any]:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise LMError(f"answer has no choices: {_one_line(json.dumps(data))}")
    return choices[0]


def _message_text(data: dict[str, Any]) -> str:
    content = (_first_choice(data).get("message") or {}).get("content")
    return content if isinstance(content, str) else ""


def _usage(data: dict[str, Any]) -> Usage:
    usage = data.get("usage") or {}
    return Usage(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
    )


def _tool_call(raw: dict[str, Any]) -> ToolCall:
    function = raw.get("function") or {}
    name = str(function.get("name") or "")
    ids: dict[str, Any] = {"id": raw["id"]} if raw.get("id") else {}
    arguments = function.get("arguments")
    if isinstance(arguments, dict):
        return ToolCall(name=name, arguments=arguments, **ids)
    text = arguments if isinstance(arguments, str) else ""
    try:
        # No-argument calls arrive as "" from some servers.
        parsed = loads(text) if text.strip() else {}
    except ValueError as error:
        return ToolCall(name=name, parse_error=f"arguments are not JSON: {error}", **ids)
    if not isinstance(parsed, dict):
        return ToolCall(name=name, parse_error="arguments are not a JSON object", **ids)
    return ToolCall(name=name, arguments=parsed, **ids)


def _one_line(value: object) -> str:
    text = " ".join(str(value).split()) or repr(value)
    return text[:_EXCERPT_CHARS]
