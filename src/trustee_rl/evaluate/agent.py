"""The model under evaluation, answering many conversations at once.

Benchmarks hand an `Agent` whole conversations and get its next assistant turn for each. A local
model (`embedded` or a Hugging Face checkpoint dir) is rendered, generated and parsed by the same
chat format and token ledger as in training, so what is evaluated is what was trained; generation
is greedy and batched. A server is driven through `LMPolicy` with its native tool calling.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from trustee_rl.schema import Message, Tool

DEFAULT_BATCH = 16
# Event-loop passes without a new request after which a batch stops waiting for more.
QUIET_PASSES = 3
# An opening message at least this long (tau2's policy and tools: about 5,000 tokens) is worth
# keeping the model's KV cache of. Shorter openings are cheap to recompute, and the conversations
# that have them are better generated in one batch.
MIN_CACHED_OPENING = 1024
CACHED_OPENINGS = 4


@dataclass(frozen=True)
class Conversation:
    messages: list[Message]
    tools: list[Tool]
    # Which benchmark item and step this is; models ignore it, ground-truth replays look it up.
    key: str = ""


class Agent(Protocol):
    # Stable label: results are cached under it and tables are headed by it.
    name: str

    async def respond(self, conversations: Sequence[Conversation]) -> list[Message]: ...

    async def aclose(self) -> None: ...


class AgentPolicy:
    """An `Agent` as the `Policy` that `run_episode` asks for one turn at a time. Evaluation is
    greedy, so the turn seed has nothing to do."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.model = agent.name

    async def act(self, messages: list[Message], tools: list[Tool], seed: int) -> Message:
        return (await self.agent.respond([Conversation(list(messages), tools)]))[0]


class LocalAgent:
    """Greedy batched generation from an in-process HF model in its training chat format."""

    def __init__(
        self,
        source: str,
        *,
        chat_format: str | None = None,
        max_new_tokens: int = 256,
        batch_size: int = DEFAULT_BATCH,
    ) -> None:
        from trustee_rl.policy.chat import chat_format_for
        from trustee_rl.policy.model import load_policy
        from trustee_rl.train.rollout import Generator

        self.model, self.tokenizer = load_policy(source)
        self.chat_format = chat_format_for(chat_format, self.tokenizer)
        self.generate = Generator(
            self.model,
            self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            self.chat_format.stop_ids,
            temperature=0.0,
        )
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.name = source if source == "embedded" else checkpoint_label(Path(source))
        self.window = int(getattr(self.model.config, "max_position_embeddings", 0) or 1 << 30)
        self.openings = OpeningCache(self.model, self.chat_format.end_of_turn_id)
        # Requests from concurrent callers (many episodes in flight) queue here and are answered
        # in shared batches, one batch at a time, since one batch saturates the CPU.
        self._pending: list[tuple[Conversation, asyncio.Future[Message]]] = []
        self._worker: asyncio.Task[None] | None = None

    async def respond(self, conversations: Sequence[Conversation]) -> list[Message]:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in conversations]
        self._pending += zip(conversations, futures, strict=True)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return list(await asyncio.gather(*futures))

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
        from trustee_rl.policy.ledger import TokenLedger

        ledgers = [TokenLedger(self.tokenizer, self.chat_format) for _ in conversations]
        contexts = [
            ledger.start(conversation.messages, conversation.tools)
            for ledger, conversation in zip(ledgers, conversations, strict=True)
        ]
        fits = [len(ids) + self.max_new_tokens <= self.window for ids in contexts]
        openings = [
            self.openings.opening(ids) if ok else None
            for ids, ok in zip(contexts, fits, strict=True)
        ]
        batched = [
            ids
            for ids, ok, opening in zip(contexts, fits, openings, strict=True)
            if ok and opening is None
        ]
        outputs = iter(self.generate(batched, self.max_new_tokens) if batched else [])
        replies = []
        for ledger, context, ok, opening in zip(ledgers, contexts, fits, openings, strict=True):
            if not ok:  # no reply, and it says why: the benchmark scores it as the failure it is
                replies.append(
                    Message(
                        role="assistant",
                        content=f"[context of {len(context)} tokens exceeds the model's {self.window}-token window]",
                    )
                )
            elif opening is None:
                replies.append(ledger.add_policy_turn(next(outputs)))
            else:
                (ids,) = self.generate(
                    [context], self.max_new_tokens, prefix_cache=self.openings.copy(opening)
                )
                replies.append(ledger.add_policy_turn(ids))
        return replies

    async def aclose(self) -> None:
        return None


class OpeningCache:
    """The model's KV caches of long conversation openings, the first message through its
    end-of-turn token (a system prompt with its tools).

    A benchmark like tau2 starts every turn of every episode of a domain with the same 5,000-token
    opening; recomputing it each turn would cost most of the CPU time of a turn. A conversation
    whose opening is cached is generated alone, from a copy of the cache: long openings make a CPU
    generation compute-bound, so batching such conversations gains nothing.
    """

    def __init__(self, model: Any, end_of_turn_id: int, capacity: int = CACHED_OPENINGS) -> None:
        self.model = model
        self.end_of_turn_id = end_of_turn_id
        self.capacity = capacity
        self._caches: OrderedDict[tuple[int, ...], Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._caches)

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
        import torch
        from transformers import DynamicCache

        cache = DynamicCache()
        with torch.no_grad():
            self.model(input_ids=torch.tensor([opening]), past_key_values=cache, use_cache=True)
        return cache


class ServerAgent:
    """A model behind an OpenAI-compatible server, asked at temperature 0, many requests in flight."""

    def __init__(self, url: str, model_name: str | None, *, max_new_tokens: int = 256) -> None:
        from trustee_rl.lm.openai_http import OpenAIHTTPLM
        from trustee_rl.policy.lm_policy import LMPolicy

        self.lm = OpenAIHTTPLM(url.rstrip("/"), model=model_name)
        self.policy = LMPolicy(self.lm, max_tokens=max_new_tokens, temperature=0.0)
        self.name = f"{model_name or 'default'}@{url.rstrip('/')}"

    async def respond(self, conversations: Sequence[Conversation]) -> list[Message]:
        return list(
            await asyncio.gather(
                *(
                    self.policy.act(conversation.messages, conversation.tools, seed=0)
                    for conversation in conversations
                )
            )
        )

    async def aclose(self) -> None:
        await self.lm.aclose()


def open_agent(
    model: str,
    model_name: str | None = None,
    *,
    chat_format: str | None = None,
    max_new_tokens: int = 256,
    batch_size: int = DEFAULT_BATCH,
) -> Agent:
    """`embedded`, a Hugging Face checkpoint dir, or an http(s):// OpenAI-compatible server URL."""
    if model.startswith(("http://", "https://")):
        return ServerAgent(model, model_name, max_new_tokens=max_new_tokens)
    if model != "embedded" and not Path(model).is_dir():
        raise ValueError(
            f"unknown model {model!r}: use 'embedded', a checkpoint dir, or an http(s):// server URL"
        )
    return LocalAgent(
        model, chat_format=chat_format, max_new_tokens=max_new_tokens, batch_size=batch_size
    )


def checkpoint_label(path: Path) -> str:
    """A checkpoint's name plus a digest of its weights, so a retrained dir is not served stale
    cached results."""
    digest = hashlib.sha256()
    for weights in sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin")):
        stat = weights.stat()
        digest.update(f"{weights.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    resolved = path.resolve()
    return f"{resolved.parent.name}/{resolved.name}#{digest.hexdigest()[:8]}"
