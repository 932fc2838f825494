"""A policy played by an in-process Hugging Face model: the one being trained, or a checkpoint of it.

Generation is plain ancestral sampling at a temperature (no top-k/top-p, which would make the
sampling distribution differ from the one the policy gradient assumes), one sequence at a time,
seeded per call so a turn is reproducible whatever ran before.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trustee_rl.policy.chat import ChatFormat, chat_format_for
from trustee_rl.policy.ledger import TokenLedger
from trustee_rl.policy.model import load_policy
from trustee_rl.schema import Message, Tool


class HFPolicy:
    """The `Policy` protocol over (model, tokenizer, chat format).

    `prefill` is text forced at the start of every assistant turn (e.g. "<tool_call>\\n"); it is
    part of the reply that gets parsed, but in a ledger its tokens have mask 0: they were not
    sampled, so the policy gradient must not credit them to the policy.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        chat_format: ChatFormat | None = None,
        *,
        name: str = "hf-policy",
        max_new_tokens: int = 256,
        temperature: float = 0.7,
        prefill: str | None = None,
    ) -> None:
        self.network = model
        self.tokenizer = tokenizer
        self.chat_format = chat_format or chat_format_for(None, tokenizer)
        self.model = name
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.prefill = prefill
        # One generation at a time: the CPU is saturated by one, and act() runs in worker threads.
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        source: str,
        *,
        chat_format: str | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.7,
        prefill: str | None = None,
    ) -> HFPolicy:
        """A policy from "embedded" or a checkpoint dir, in the named or detected chat format."""
        model, tokenizer = load_policy(source)
        return cls(
            model,
            tokenizer,
            chat_format_for(chat_format, tokenizer),
            name=f"hf:{source}",
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            prefill=prefill,
        )

    async def act(self, messages: list[Message], tools: list[Tool], seed: int) -> Message:
        return await asyncio.to_thread(self._act, messages, tools, seed)

    def _act(self, messages: list[Message], tools: list[Tool], seed: int) -> Message:
        started = time.perf_counter()
        ledger = TokenLedger(self.tokenizer, self.chat_format)
        ledger.start(messages, tools)
        reply = self.sample_turn(ledger, seed)
        reply.latency_s = time.perf_counter() - started
        return reply

    def sample_turn(self, ledger: TokenLedger, seed: int) -> Message:
        """Generate the policy's next turn from the ledger's context and record it there."""
        context = ledger.add_prefill(self.prefill) if self.prefill else ledger.context_ids
        sampled = self.generate(
            context, max_new_tokens=self.max_new_tokens, temperature=self.temperature, seed=seed
        )
        return ledger.add_policy_turn(sampled)

    def generate(
        self, context_ids: Sequence[int], *, max_new_tokens: int, temperature: float, seed: int
    ) -> list[int]:
        """New ids after `context_ids`, ending with the end-of-turn id when the model produced it
        within `max_new_tokens`. `temperature` 0 is greedy."""
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if not context_ids:
            raise ValueError("generate() needs a non-empty context")
        end = self.chat_format.end_of_turn_id
        device = self.network.device
        generator = torch.Generator(device=device)
        generator.manual_seed(seed & 0xFFFF_FFFF_FFFF_FFFF)
        new: list[int] = []
        # no_grad is per thread, and act() runs this in a worker thread, so it is set here.
        with self._lock, torch.no_grad():
            training = self.network.training
            self.network.train(False)  # sample the policy itself, without dropout
            try:
                inputs = torch.tensor([list(context_ids)], device=device)
                cache = None
                for _ in range(max_new_tokens):
                    output = self.network(input_ids=inputs, past_key_values=cache, use_cache=True)
                    cache = output.past_key_values
                    token = _sample(output.logits[0, -1].float(), temperature, generator)
                    new.append(token)
                    if token == end:
                        break
                    inputs = torch.tensor([[token]], device=device)
            finally:
                self.network.train(training)
        return new


def _sample(logits: torch.Tensor, temperature: float, generator: torch.Generator) -> int:
    if temperature <= 0:
        return int(logits.argmax())
    probabilities = torch.softmax(logits / temperature, dim=-1)
    return int(torch.multinomial(probabilities, 1, generator=generator))
