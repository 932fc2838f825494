"""A policy played by any LM backend: native tool calling where the backend has it, else the
Hermes/Qwen text format, rendered and parsed exactly as in training."""

from __future__ import annotations

from typing import Protocol

from trustee_rl.lm.base import LM
from trustee_rl.policy.hermes import parse_assistant_text, to_text_messages
from trustee_rl.schema import Message, Tool


class Policy(Protocol):
    model: str

    async def act(self, messages: list[Message], tools: list[Tool], seed: int) -> Message: ...


class LMPolicy:
    def __init__(self, lm: LM, *, max_tokens: int = 256, temperature: float = 0.7) -> None:
        self.lm = lm
        self.model = lm.model
        self.max_tokens = max_tokens
        self.temperature = temperature

    async def act(self, messages: list[Message], tools: list[Tool], seed: int) -> Message:
        if self.lm.native_tools:
            completion = await self.lm.complete(
                [message.to_openai() for message in messages],
                tools=[tool.to_openai() for tool in tools],
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                seed=seed,
            )
            content, calls = completion.text, completion.tool_calls
            if not calls:  # servers without a tool parser return the calls as text
                content, calls = parse_assistant_text(completion.text)
        else:
            completion = await self.lm.complete(
                to_text_messages(messages, tools),
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                seed=seed,
            )
            content, calls = parse_assistant_text(completion.text)
        return Message(
            role="assistant",
            content=content or None,
            tool_calls=calls,
            latency_s=completion.latency_s,
            usage=completion.usage,
        )
