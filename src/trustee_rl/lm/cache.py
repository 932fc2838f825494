"""Memoised completions for seeded calls.

A seeded call to a deterministic backend is a pure function of its inputs, so members of a GRPO
group that reach the same situation (same task, same simulator seed, same history) share one
simulator call instead of repeating it. Unseeded calls always go to the backend. A repeat is
returned with zero latency and usage, so accounting shows what was actually spent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from collections import OrderedDict
from typing import Any

from trustee_rl.lm.base import LM, Completion
from trustee_rl.schema import Usage


class CachedLM:
    def __init__(self, inner: LM, max_entries: int = 4096) -> None:
        self.inner = inner
        self.model = inner.model
        self.native_tools = inner.native_tools
        self.max_entries = max_entries
        self.hits = 0
        self._entries: OrderedDict[str, asyncio.Future[Completion]] = OrderedDict()

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
        async def call() -> Completion:
            return await self.inner.complete(
                messages,
                json_schema=json_schema,
                tools=tools,
                max_tokens=max_tokens,
                temperature=temperature,
                seed=seed,
                stop=stop,
            )

        if seed is None:
            return await call()
        options = [json_schema, tools, max_tokens, temperature, seed, stop]
        key = hashlib.sha256(json.dumps([messages, options], sort_keys=True).encode()).hexdigest()
        pending = self._entries.get(key)
        if pending is not None:  # the same call is done or in flight: share it
            self.hits += 1
            self._entries.move_to_end(key)
            completion = await asyncio.shield(pending)
            return dataclasses.replace(completion, latency_s=0.0, usage=Usage())
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        self._entries[key] = future
        try:
            completion = await call()
        except BaseException as error:
            del self._entries[key]  # failures are not remembered: a retry must reach the backend
            future.set_exception(error)
            future.exception()  # mark retrieved; waiters still receive it
            raise
        future.set_result(completion)
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return completion

    async def aclose(self) -> None:
        await self.inner.aclose()
