"""The one protocol every text-generation backend implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from trustee_rl.schema import ToolCall, Usage


class LMError(RuntimeError):
    """A backend could not produce a completion (after its own retries)."""


class LMUnavailable(LMError):
    """The backend cannot be reached or loaded at all; retrying will not help."""


@dataclass
class Completion:
    text: str
    model: str
    usage: Usage = field(default_factory=Usage)
    latency_s: float = 0.0
    finish_reason: str | None = None
    # Calls returned natively by a server that supports OpenAI `tools` (empty otherwise).
    tool_calls: list[ToolCall] = field(default_factory=list)


@runtime_checkable
class LM(Protocol):
    """An async chat-completion backend.

    `messages` are OpenAI-format dicts. With `json_schema`, the returned text is one JSON document
    that the backend has done its best to make valid against the schema (natively constrained where
    the backend can, else prompted, parsed and repaired); callers still validate it.
    With `tools` (OpenAI tool specs), backends that speak native tool calling pass them through
    and fill `Completion.tool_calls`; others ignore them and the caller renders tools into the prompt.
    """

    model: str
    native_tools: bool

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
    ) -> Completion: ...

    async def aclose(self) -> None: ...
