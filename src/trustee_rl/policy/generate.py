"""Batched generation from a causal LM on token ids, and the KV caches of long openings.

Kept apart from the policy so that code which only needs token-in/token-out generation (a
trainer's rollout, a benchmark) shares exactly one implementation.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch

# An opening message at least this long (tau2's policy and tools: about 5,000 tokens) is worth
# keeping the model's KV cache of. Shorter openings are cheap to recompute, and the conversations
# that have them are better generated in one batch.
MIN_CACHED_OPENING = 1024
CACHED_OPENINGS = 4


@dataclass
class Generator:
    """Batched sampling from a causal LM on token ids; each row stops at an end-of-turn token,
    or at the first of `stop_strings` it writes (for which generation needs the tokenizer).
    `bf16`: compute in bf16, as a trainer with mixed precision does. On a GPU that is autocast
    over the model's own weights. On a CPU it is a bf16 copy of the float32 weights, refreshed at
    every call so it never lags the trained model: autocast there would cast every weight at every
    decoded token, as slow as float32, while the copy decodes about twice as fast (measured on
    SmolLM2-135M, 2 cores)."""

    model: Any
    pad_id: int
    stop_ids: list[int]
    temperature: float
    tokenizer: Any = None
    stop_strings: tuple[str, ...] = ()
    bf16: bool = False
    _shadow: Any = field(default=None, init=False, repr=False)
    _shadow_of: Any = field(default=None, init=False, repr=False)

    @torch.no_grad()
    def __call__(
        self,
        contexts: list[list[int]],
        max_new_tokens: int,
        prefix_cache: Any = None,
        seed: int | None = None,
    ) -> list[list[int]]:
        """`prefix_cache`: the model's KV cache of an opening the context starts with (a batch of
        one), so only what follows the opening is computed; generation extends it in place.
        `seed`: sample from a generator seeded with it, leaving torch's global one as it was."""
        if seed is None or self.temperature <= 0:
            return self._generate(contexts, max_new_tokens, prefix_cache)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self._generate(contexts, max_new_tokens, prefix_cache)

    def _generate(
        self, contexts: list[list[int]], max_new_tokens: int, prefix_cache: Any
    ) -> list[list[int]]:
        if prefix_cache is not None and len(contexts) != 1:
            raise ValueError("a prefix cache serves a batch of one context")
        width = max(len(ids) for ids in contexts)
        input_ids = torch.full((len(contexts), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(contexts), width), dtype=torch.long)
        for row, ids in enumerate(contexts):  # left padding keeps every row's last token aligned
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention[row, width - len(ids) :] = 1
        # A cached opening was computed by the float32 model (OpeningCache): what extends it must
        # be too, or its keys and the new queries differ in dtype.
        model = self._decoder() if prefix_cache is None else self.model
        was_training = model.training
        model.eval()
        try:
            with autocast(model, self.bf16 and model is self.model and prefix_cache is None):
                output = model.generate(
                    input_ids=input_ids.to(model.device),  # the first GPU of a spread model
                    attention_mask=attention.to(model.device),
                    max_new_tokens=max_new_tokens,
                    do_sample=self.temperature > 0,
                    temperature=self.temperature if self.temperature > 0 else None,
                    # Plain sampling from the full distribution, stated: the model's generation
                    # config would otherwise add top_k=50, and GRPO's log-probs assume none.
                    top_k=0 if self.temperature > 0 else None,
                    top_p=1.0 if self.temperature > 0 else None,
                    eos_token_id=self.stop_ids,
                    pad_token_id=self.pad_id,
                    use_cache=True,
                    past_key_values=prefix_cache,
                    **(
                        {"stop_strings": list(self.stop_strings), "tokenizer": self.tokenizer}
                        if self.stop_strings
                        else {}
                    ),
                )
        finally:
            model.train(was_training)
        return [self._trim(row[width:].tolist()) for row in output]

    def _decoder(self) -> Any:
        """The model to generate with: the bf16 copy where one serves (see the class), else the
        model itself."""
        params = list(self.model.parameters())
        if not (
            self.bf16
            and self.model.device.type == "cpu"
            and all(p.dtype == torch.float32 for p in params)
        ):
            return self.model
        if self._shadow_of is not self.model:  # first use, or a trainer wrapped the model
            self._shadow = None  # the old copy goes before the new one is made
            # The copy is built with bf16 parameters in place of the float32 ones (deepcopy's memo
            # maps each parameter, tied ones once), so no second float32 model is ever allocated.
            # Parameters only: buffers such as the rotary frequencies keep float32 precision.
            halves = {
                id(param): torch.nn.Parameter(
                    param.detach().to(torch.bfloat16), requires_grad=False
                )
                for param in params
            }
            self._shadow, self._shadow_of = copy.deepcopy(self.model, halves), self.model
        else:
            with torch.no_grad():
                for mine, theirs in zip(self._shadow.parameters(), params, strict=True):
                    mine.copy_(theirs)
        return self._shadow

    def _trim(self, ids: list[int]) -> list[int]:
        for position, token in enumerate(ids):
            if token in self.stop_ids:
                return ids[: position + 1]
        return ids


def autocast(model: Any, bf16: bool) -> Any:
    """bf16 autocast on the model's device when `bf16`, else nothing."""
    return torch.autocast(device_type=model.device.type, dtype=torch.bfloat16, enabled=bf16)


class OpeningCache:
    """The model's KV caches of long conversation openings, the first message through its
    end-of-turn token (a system prompt with its tools).

    A benchmark like tau2 starts every turn of every episode of a domain with the same 5,000-token
    opening; recomputing it each turn would cost most of the CPU time of a turn. A conversation
    whose opening is cached is generated alone, from a copy of the cache: long openings make a CPU
    generation compute-bound, so batching such conversations gains nothing.
    """

    def __init__(
        self,
        model: Any,
        end_of_turn_id: int,
        capacity: int = CACHED_OPENINGS,
        *,
        bf16: bool = False,
    ) -> None:
        self.model = model
        self.bf16 = bf16
        self.end_of_turn_id = end_of_turn_id
        self.capacity = capacity
        self._caches: OrderedDict[tuple[int, ...], Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._caches)

    def __contains__(self, opening: object) -> bool:
        return opening in self._caches

    def opening(self, context: list[int]) -> tuple[int, ...] | None:
        """`context`'s opening, or None when it is short or is all there is."""
        try:
            length = context.index(self.end_of_turn_id) + 1
        except ValueError:
            return None
        if length < MIN_CACHED_OPENING or length >= len(context):
            return None
        return tuple(context[:length])

    def copy(self, opening: tuple[int, ...]) -> Any:
        """A copy of the opening's KV cache (computed the first time), for one generation to
        extend."""
        if opening not in self._caches:
            self._caches[opening] = self._compute(list(opening))
            while len(self._caches) > self.capacity:
                self._caches.popitem(last=False)
        self._caches.move_to_end(opening)
        return copy.deepcopy(self._caches[opening])

    def _compute(self, opening: list[int]) -> Any:
        from transformers import DynamicCache

        cache = DynamicCache()
        with torch.no_grad(), autocast(self.model, self.bf16):
            self.model(
                input_ids=torch.tensor([opening], device=self.model.device),
                past_key_values=cache,
                use_cache=True,
            )
        return cache
