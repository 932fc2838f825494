"""A policy played by any `LM` backend (an OpenAI-compatible server, llama.cpp in-process): native
tool calling where the backend has it, else the Hermes/Qwen text format, rendered and parsed
exactly as in training."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from trustee_rl.lm.base import LM
from trustee_rl.lm.hermes import parse_assistant_text, to_text_messages
from trustee_rl.policy.base import Conversation
from trustee_rl.schema import Message


class LMPolicy:
    """The `Policy` protocol over an `LM`; many conversations are answered concurrently."""

    trainable = False

    def __init__(
        self, lm: LM, *, max_tokens: int = 256, temperature: float = 0.7, name: str | None = None
    ) -> None:
        self.lm = lm
        self.name = name or lm.model
        self.max_tokens = max_tokens
        self.temperature = temperature

    async def act(self, conversations: Sequence[Conversation]) -> list[Message]:
        return list(await asyncio.gather(*(self._turn(c) for c in conversations)))

    async def _turn(self, conversation: Conversation) -> Message:
        max_tokens = min(self.max_tokens, conversation.max_tokens or self.max_tokens)
        if self.lm.native_tools:
            completion = await self.lm.complete(
                [message.to_openai() for message in conversation.messages],
                tools=[tool.to_openai() for tool in conversation.tools],
                max_tokens=max_tokens,
                temperature=self.temperature,
                seed=conversation.seed,
            )
            content, calls = completion.text, completion.tool_calls
            if not calls:  # servers without a tool parser return the calls as text
                content, calls = parse_assistant_text(completion.text)
        else:
            completion = await self.lm.complete(
                to_text_messages(conversation.messages, conversation.tools),
                max_tokens=max_tokens,
                temperature=self.temperature,
                seed=conversation.seed,
            )
            content, calls = parse_assistant_text(completion.text)
        return Message(
            role="assistant",
            content=content or None,
            tool_calls=calls,
            latency_s=completion.latency_s,
            usage=completion.usage,
        )

    async def aclose(self) -> None:
        await self.lm.aclose()
