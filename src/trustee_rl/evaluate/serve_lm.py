"""Any `LM` behind an OpenAI-compatible chat endpoint on loopback.

Benchmarks that drive their own simulators through an HTTP client (tau2's user simulator goes
through LiteLLM) reach the in-process embedded model this way. Requests are answered on the
server's handler threads by running `LM.complete` on the event loop that opened the server, so
the LM is only ever used from that one loop.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

from trustee_rl.lm.base import LM, LMError, LMUnavailable
from trustee_rl.testing.openai_server import LoopbackOpenAIServer, Reply

DEFAULT_MAX_TOKENS = 256
# A request waits at most this long for its completion before the client sees a 500.
REQUEST_TIMEOUT_S = 600.0


class LMResponder:
    """Answers one chat request with `lm`, run on `loop` (called from a server thread)."""

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
        self._server: LoopbackOpenAIServer | None = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the LM server is not started")
        return self._server.base_url

    async def __aenter__(self) -> LMServer:
        responder = LMResponder(self.lm, asyncio.get_running_loop())
        self._server = LoopbackOpenAIServer(
            responder, host=self.host, port=self.port, model=self.model
        )
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
