"""An OpenAI-compatible chat endpoint on loopback (stdlib HTTP), and any `LM` served through it.

Benchmarks that drive their own simulators through an HTTP client (tau2's user simulator goes
through LiteLLM) reach the in-process embedded model this way: `async with LMServer(lm) as
server:` serves `lm` at `server.base_url`. `OpenAIServer` itself answers with any `Responder`, so
tests put scripted and schema-driven responders (trustee_rl.testing.openai_server) behind the same
transport.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from trustee_rl.lm.base import LM, LMError, LMUnavailable

DEFAULT_MAX_TOKENS = 256
# A request waits at most this long for its completion before the client sees a 500.
REQUEST_TIMEOUT_S = 600.0


@dataclass
class Reply:
    """One answer from the server. A `status` of 400 or more answers with an error body instead.

    `tool_calls` items are OpenAI tool calls or the shorthand {"name": ..., "arguments": ...},
    where arguments may be a dict or raw text (to send malformed arguments).
    """

    content: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    finish_reason: str | None = None


Responder = Callable[[dict[str, Any]], Reply]


class OpenAIServer:
    """Serves /v1/models and /v1/chat/completions on a thread; use as a context manager.

    Each request is answered on its own handler thread, so concurrent requests overlap as they
    would against a batching inference server.
    """

    def __init__(
        self,
        responder: Responder,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        model: str = "loopback-model",
    ) -> None:
        self.responder = responder
        self.host = host
        self.port = port
        self.model = model
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the server is not started")
        return f"http://{self.host}:{self._httpd.server_port}/v1"

    def start(self) -> None:
        if self._httpd is not None:
            raise RuntimeError("the server is already started")
        self._httpd = _HTTPServer(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="openai-server",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is None or self._thread is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
        self._httpd = self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.model, "object": "model"}]}

    def answer(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The status and body for one chat request."""
        try:
            reply = self.reply(request)
        except Exception as error:  # a crashed backend: the client sees a 500, as from a real one
            reply = Reply(content=f"responder failed: {error}", status=500)
        if reply.status >= 400:
            return reply.status, _error(reply.content or f"HTTP {reply.status}")
        return 200, _chat_completion(request, reply, self.model)

    def reply(self, request: dict[str, Any]) -> Reply:
        return self.responder(request)

    def respond(self, handler: BaseHTTPRequestHandler, request: dict[str, Any]) -> None:
        """Write the answer to one chat request on `handler`'s connection; a test server that
        misbehaves on purpose (truncated bodies, dropped connections) overrides this."""
        write_json(handler, *self.answer(request))


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # Listen backlog: a burst of concurrent clients must not be refused or serialised.
    request_queue_size = 1024

    def __init__(self, owner: OpenAIServer) -> None:
        self.owner = owner
        super().__init__((owner.host, owner.port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are separate writes: with Nagle on, each answer stalls ~40 ms on an ACK.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            write_json(self, 200, self.server.owner.models())
        else:
            write_json(self, 404, _error(f"no route {self.path}"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/chat/completions":
            write_json(self, 404, _error(f"no route {self.path}"))
            return
        try:
            request = json.loads(raw)
        except ValueError:
            write_json(self, 400, _error("request body is not JSON"))
            return
        self.server.owner.respond(self, request)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: a benchmark sends thousands of requests."""


def write_json(
    handler: BaseHTTPRequestHandler,
    status: int,
    payload: dict[str, Any],
    headers: Mapping[str, str] | None = None,
) -> None:
    """Answer on `handler`'s connection with `payload` as JSON and any extra `headers`."""
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message}}


def _chat_completion(request: dict[str, Any], reply: Reply, model: str) -> dict[str, Any]:
    calls = [_openai_tool_call(call) for call in reply.tool_calls]
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if calls:
        message["tool_calls"] = calls
    prompt = " ".join(str(m.get("content") or "") for m in request.get("messages", []))
    output = (reply.content or "") + "".join(call["function"]["arguments"] for call in calls)
    prompt_tokens, completion_tokens = _tokens(prompt), _tokens(output)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model") or model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": reply.finish_reason or ("tool_calls" if calls else "stop"),
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _openai_tool_call(call: dict[str, Any]) -> dict[str, Any]:
    call_id = f"call_{uuid.uuid4().hex[:12]}"
    if "function" in call:
        return {"id": call_id, "type": "function", **call}
    arguments = call.get("arguments", {})
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": call["name"], "arguments": text},
    }


def _tokens(text: str) -> int:
    """A rough count for the usage field: what the responder sent is text, not tokens."""
    return max(1, len(text) // 4)


class LMResponder:
    """Answers one chat request with `lm`, run on `loop` (called from a server thread), so the LM
    is only ever used from the one event loop that opened the server."""

    def __init__(
        self, lm: LM, loop: asyncio.AbstractEventLoop, timeout_s: float = REQUEST_TIMEOUT_S
    ) -> None:
        self.lm = lm
        self.loop = loop
        self.timeout_s = timeout_s

    def __call__(self, request: dict[str, Any]) -> Reply:
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            return Reply(content="request has no messages", status=400)
        stop = request.get("stop")
        seed = request.get("seed")
        coroutine = self.lm.complete(
            messages,
            tools=request.get("tools") or None,
            max_tokens=int(
                request.get("max_tokens")
                or request.get("max_completion_tokens")
                or DEFAULT_MAX_TOKENS
            ),
            temperature=float(request.get("temperature", 0.0)),
            seed=seed if isinstance(seed, int) else None,
            stop=[stop] if isinstance(stop, str) else stop,
        )
        try:
            completion = asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(
                self.timeout_s
            )
        except LMUnavailable:
            raise  # the server answers 500: the backend is gone
        except LMError as error:  # this request cannot be completed (say, it outgrew the context)
            return Reply(content=str(error), status=400)
        return Reply(
            content=completion.text,
            tool_calls=[
                {"name": call.name, "arguments": call.arguments} for call in completion.tool_calls
            ],
            finish_reason=completion.finish_reason,
        )


class LMServer:
    """`async with LMServer(lm) as server:` serves `lm` at `server.base_url` until the block ends.

    The caller keeps ownership of `lm` (closing it is theirs)."""

    def __init__(self, lm: LM, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.lm = lm
        self.host = host
        self.port = port
        self.model = lm.model or "lm"
        self._server: OpenAIServer | None = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the LM server is not started")
        return self._server.base_url

    async def __aenter__(self) -> LMServer:
        responder = LMResponder(self.lm, asyncio.get_running_loop())
        self._server = OpenAIServer(responder, host=self.host, port=self.port, model=self.model)
        self._server.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._server is not None:
            # Stopping joins the serving thread; a handler may be waiting on this loop meanwhile.
            await asyncio.to_thread(self._server.stop)
            self._server = None
