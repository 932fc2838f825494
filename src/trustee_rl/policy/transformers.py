"""The policy as an in-process Hugging Face model: the one being trained, or a checkpoint of it.

Conversations are rendered, generated and parsed by the model's chat format and a token ledger,
so what is evaluated is what was trained. Requests from concurrent callers (many episodes in
flight) queue and are answered in shared batches, one batch at a time, since one batch saturates
a CPU. Sampling is plain ancestral sampling at a temperature (no top-k/top-p, which would make the
sampling distribution differ from the one the policy gradient assumes); temperature 0 is greedy.

Sampling is seeded from the conversations, so a rerun replays it. By default each conversation is
sampled alone under its own seed: reproducible whatever else was in flight. A trainer that steps
episodes in lockstep (the same batches every time) sets `batch_sampling` to sample a whole batch at
once under one seed derived from its conversations; group members that share a seed then still
sample differently, since each is its own row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from trustee_rl.lm.hermes import CALL_CLOSE
from trustee_rl.policy.base import Conversation
from trustee_rl.policy.chat import ChatFormat, chat_format_for
from trustee_rl.policy.generate import Generator, OpeningCache
from trustee_rl.policy.ledger import TokenLedger, context_too_long, ledger_for
from trustee_rl.schema import Message
from trustee_rl.seeding import derive_seed

DEFAULT_BATCH = 16
# Event-loop passes without a new request after which a batch stops waiting for more.
QUIET_PASSES = 3


class TransformersPolicy:
    """The `Policy` protocol over (model, tokenizer, chat format)."""

    trainable = True

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str,
        chat_format: str | ChatFormat | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        batch_size: int = DEFAULT_BATCH,
        batch_sampling: bool = False,
        stop_after_call: bool = False,
        bf16: bool = False,
    ) -> None:
        """`stop_after_call`: end each turn where its first tool call closes (the turn is closed as
        if the model had ended it there), for scoring that reads only the first call; never for
        training, whose ledger must hold exactly what was sampled. `bf16`: generate under bf16
        autocast (policy/model.py `native_bf16` says where that is fast)."""
        self.bf16 = bf16
        self.tokenizer = tokenizer
        self.batch_sampling = batch_sampling
        self.chat_format = (
            chat_format
            if isinstance(chat_format, ChatFormat)
            else chat_format_for(chat_format, tokenizer)
        )
        self.generator = Generator(
            model,
            tokenizer.pad_token_id or tokenizer.eos_token_id,
            self.chat_format.stop_ids,
            temperature=temperature,
            tokenizer=tokenizer,
            stop_strings=(CALL_CLOSE,) if stop_after_call else (),
            bf16=bf16,
        )
        self.name = name
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.window = int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)
        self.openings = OpeningCache(model, self.chat_format.end_of_turn_id)
        self._pending: list[tuple[Conversation, asyncio.Future[Message]]] = []
        self._worker: asyncio.Task[None] | None = None

    @property
    def model(self) -> Any:
        return self.generator.model

    @model.setter
    def model(self, model: Any) -> None:
        """A trainer may wrap the model it was given; generation must follow the wrapped one."""
        self.generator.model = model
        self.openings = OpeningCache(model, self.chat_format.end_of_turn_id)

    def new_ledger(self) -> TokenLedger:
        """An empty token ledger for one episode; pass it in every `Conversation` of the episode."""
        return TokenLedger(self.tokenizer, self.chat_format)

    async def act(self, conversations: Sequence[Conversation]) -> list[Message]:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in conversations]
        self._pending += zip(conversations, futures, strict=True)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return list(await asyncio.gather(*futures))

    async def aclose(self) -> None:
        return None

    async def _drain(self) -> None:
        while self._pending:
            await self._fill()
            batch, self._pending = (
                self._pending[: self.batch_size],
                self._pending[self.batch_size :],
            )
            try:
                replies = await asyncio.to_thread(
                    self._respond_batch, [conversation for conversation, _ in batch]
                )
            except Exception as error:
                for _, future in batch:
                    future.set_exception(error)
                continue
            for (_, future), reply in zip(batch, replies, strict=True):
                future.set_result(reply)

    async def _fill(self) -> None:
        """Wait, briefly, for callers woken by the last batch to queue their next turn: a caller
        needs a few event-loop passes to get there, and batches of one would waste the CPU."""
        for wait_s in (0.0, 0.005):
            size, quiet = len(self._pending), 0
            while len(self._pending) < self.batch_size and quiet < QUIET_PASSES:
                await asyncio.sleep(wait_s)
                quiet = quiet + 1 if len(self._pending) == size else 0
                size = len(self._pending)

    def _respond_batch(self, conversations: Sequence[Conversation]) -> list[Message]:
        ledgers = [ledger_for(conversation, self.new_ledger) for conversation in conversations]
        caps = [
            min(self.max_new_tokens, c.max_tokens or self.max_new_tokens) for c in conversations
        ]
        contexts = [ledger.context_ids for ledger in ledgers]
        fits = [len(ids) + cap <= self.window for ids, cap in zip(contexts, caps, strict=True)]
        # A conversation alone in its batch, or whose opening is cached already, starts from
        # its opening's cached KV. Other batches are generated together: decoding conversations
        # one by one from cached openings costs far more than one batched prefill of them
        # (48 held-out first replies of 256 tokens: minutes one by one).
        alone = len(conversations) == 1
        openings = []
        for ids, ok in zip(contexts, fits, strict=True):
            opening = self.openings.opening(ids) if ok else None
            openings.append(opening if opening in self.openings or alone else None)
        batched = [
            i
            for i, (ok, opening) in enumerate(zip(fits, openings, strict=True))
            if ok and opening is None
        ]
        sampled: dict[int, list[int]] = {}
        greedy = self.generator.temperature <= 0
        if batched and (greedy or self.batch_sampling):
            seed = derive_seed("batch", *(conversations[i].seed for i in batched))
            outputs = self.generator(
                [contexts[i] for i in batched], max(caps[i] for i in batched), seed=seed
            )
            sampled = dict(zip(batched, outputs, strict=True))
        else:
            for i in batched:
                (sampled[i],) = self.generator([contexts[i]], caps[i], seed=conversations[i].seed)
        replies = []
        for i, (ledger, context, opening) in enumerate(
            zip(ledgers, contexts, openings, strict=True)
        ):
            if not fits[i]:
                replies.append(context_too_long(len(context), self.window))
                continue
            if opening is not None:
                (sampled[i],) = self.generator(
                    [context],
                    caps[i],
                    prefix_cache=self.openings.copy(opening),
                    seed=conversations[i].seed,
                )
            replies.append(ledger.add_policy_turn(sampled[i][: caps[i]]))
        return replies
