"""The policy sampled by vLLM: token ids in, token ids and their sampling log-probabilities out.

It plays the model under training where a trainer keeps a vLLM engine in step with the weights it
trains (TRL's `use_vllm`): the engine in this process (`vllm.LLM`, TRL's colocate mode) or a
server that takes token ids (TRL's `VLLMClient`, server mode). Conversations are rendered and
replies parsed by the same chat format and token ledger as `TransformersPolicy`, so an episode's
tokens are what they would be under transformers' `generate`; the ledger also keeps the
log-probability each policy token was sampled with, which the trainer needs to correct for the
engine's numerics differing from its own.

Sampling is the same as `TransformersPolicy`'s: plain ancestral sampling at a temperature (top-k,
top-p, min-p and repetition penalty stated off, whatever the model's generation config says),
each turn capped, stopped only by the chat format's stop ids, seeded per row so a rerun replays
it. vLLM is never imported here: the engines are handed in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from trustee_rl.policy.base import Conversation
from trustee_rl.policy.chat import ChatFormat, chat_format_for
from trustee_rl.policy.ledger import TokenLedger, context_too_long, ledger_for
from trustee_rl.schema import Message
from trustee_rl.seeding import derive_seed


@dataclass(frozen=True)
class Request:
    """One row to sample: its context, its token cap and its seed."""

    context: list[int]
    max_tokens: int
    seed: int


@dataclass(frozen=True)
class Sampled:
    """What the engine sampled for one row: the ids (a stop id last, where one ended the row) and
    the log-probability of each under the distribution it was drawn from."""

    token_ids: list[int]
    logprobs: list[float]


class Engine(Protocol):
    """A vLLM engine that samples rows of token ids."""

    @property
    def max_model_len(self) -> int: ...

    def sample(self, requests: Sequence[Request], parameters: dict[str, Any]) -> list[Sampled]:
        """`parameters`: vLLM sampling parameters shared by every row."""
        ...


class ColocatedEngine:
    """A `vllm.LLM` in this process. Its log-probabilities are the processed ones (after the
    temperature) when it was made with `logprobs_mode="processed_logprobs"`, as TRL makes it."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm

    @property
    def max_model_len(self) -> int:
        return int(self.llm.llm_engine.model_config.max_model_len)

    def load_weights(self, weights: Iterable[tuple[str, Any]]) -> None:
        """Replace the weights (checkpoint names and layout) in place, by vLLM's in-place reload,
        which runs each layer's post-loading processing again: the CPU backend packs linear
        weights into its kernels' layout and drops the originals, so writing into the parameters
        (`model.load_weights`) does not reach what the kernels read. That reload processes a tied
        tensor through one of its layers only (its documented limit): the output head, tied to
        the embeddings in small models, is processed again here (the CPU backend keeps a packed
        copy of it)."""
        runner = self.llm.llm_engine.model_executor.driver_worker.model_runner
        runner.reload_weights(weights_iterator=weights, is_checkpoint_format=True)
        head = runner.get_model().lm_head
        head.quant_method.process_weights_after_loading(head)
        self.llm.reset_prefix_cache()

    def sample(self, requests: Sequence[Request], parameters: dict[str, Any]) -> list[Sampled]:
        from vllm import SamplingParams

        outputs = self.llm.generate(
            [{"prompt_token_ids": request.context} for request in requests],
            sampling_params=[
                SamplingParams(**parameters, max_tokens=request.max_tokens, seed=request.seed)
                for request in requests
            ],
            use_tqdm=False,
        )
        sampled = []
        for output in outputs:
            (completion,) = output.outputs
            ids = list(completion.token_ids)
            positions = completion.logprobs or []
            if len(positions) != len(ids):
                raise RuntimeError(f"vLLM returned {len(positions)} logprobs for {len(ids)} tokens")
            sampled.append(
                Sampled(
                    ids,
                    [
                        float(position[i].logprob)
                        for i, position in zip(ids, positions, strict=True)
                    ],
                )
            )
        return sampled


class ServerEngine:
    """A vLLM server behind TRL's `VLLMClient`, which sends token ids to its completions endpoint.
    Rows go as concurrent requests, each with its own seed and cap (one request's seed would seed
    every prompt in it alike); the server batches them."""

    def __init__(self, client: Any, concurrency: int = 32) -> None:
        self.client = client
        self.concurrency = concurrency
        self._max_model_len: int | None = None

    @property
    def max_model_len(self) -> int:
        if self._max_model_len is None:
            info = self.client.get_server_info()
            self._max_model_len = int(info["model_config"]["max_model_len"])
        return self._max_model_len

    def sample(self, requests: Sequence[Request], parameters: dict[str, Any]) -> list[Sampled]:
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests) or 1)) as pool:
            return list(pool.map(lambda request: self._sample(request, parameters), requests))

    def _sample(self, request: Request, parameters: dict[str, Any]) -> Sampled:
        output = self.client.generate(
            prompts=[request.context],
            generation_kwargs=parameters | {"max_tokens": request.max_tokens, "seed": request.seed},
        )
        (ids,) = output["completion_ids"]
        (logprobs,) = output["logprobs"] or [None]
        (ranked_ids,) = output["logprob_token_ids"] or [None]
        if logprobs is None or ranked_ids is None or len(logprobs) != len(ids):
            raise RuntimeError("the vLLM server returned no logprob for some sampled token")
        # Each position lists its top tokens by rank; the sampled one is always among them.
        return Sampled(
            list(ids),
            [
                float(scores[ranked.index(token)])
                for token, scores, ranked in zip(ids, logprobs, ranked_ids, strict=True)
            ],
        )


class VLLMPolicy:
    """The `Policy` protocol over a vLLM engine, a tokenizer and a chat format."""

    # It samples for the model being trained, whose weights the trainer keeps the engine in.
    trainable = True

    def __init__(
        self,
        engine: Engine,
        tokenizer: Any,
        *,
        name: str,
        chat_format: str | ChatFormat | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        batch_sampling: bool = False,
    ) -> None:
        """`batch_sampling`: seed each row of a call from all the call's conversations and its
        position, as `TransformersPolicy` samples a lockstep batch under one seed (group members
        that share a seed then still sample differently); else each row by its own seed."""
        self.engine = engine
        self.tokenizer = tokenizer
        self.name = name
        self.chat_format = (
            chat_format
            if isinstance(chat_format, ChatFormat)
            else chat_format_for(chat_format, tokenizer)
        )
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.batch_sampling = batch_sampling
        self._lock = asyncio.Lock()  # an in-process engine serves one call at a time

    def sampling_parameters(self) -> dict[str, Any]:
        """The vLLM sampling parameters of every row, caps and seeds aside."""
        return {
            "n": 1,
            "temperature": max(self.temperature, 0.0),
            "top_p": 1.0,
            "top_k": 0,
            "min_p": 0.0,
            "repetition_penalty": 1.0,
            "stop_token_ids": self.chat_format.stop_ids,
            # The tokenizer's end-of-sequence id stops a turn only as one of the stop ids.
            "ignore_eos": True,
            "logprobs": 0,  # the sampled token's own
        }

    def new_ledger(self) -> TokenLedger:
        """An empty token ledger for one episode; pass it in every `Conversation` of the episode."""
        return TokenLedger(self.tokenizer, self.chat_format)

    async def act(self, conversations: Sequence[Conversation]) -> list[Message]:
        async with self._lock:
            return await asyncio.to_thread(self._respond, conversations)

    async def aclose(self) -> None:
        return None

    def _respond(self, conversations: Sequence[Conversation]) -> list[Message]:
        ledgers = [ledger_for(conversation, self.new_ledger) for conversation in conversations]
        caps = [
            min(self.max_new_tokens, c.max_tokens or self.max_new_tokens) for c in conversations
        ]
        contexts = [ledger.context_ids for ledger in ledgers]
        window = self.engine.max_model_len
        fits = [len(ids) + cap <= window for ids, cap in zip(contexts, caps, strict=True)]
        seeds = [conversation.seed for conversation in conversations]
        if self.batch_sampling:
            seeds = [derive_seed("batch", *seeds, row) for row in range(len(seeds))]
        rows = [i for i, ok in enumerate(fits) if ok]
        sampled = dict(
            zip(
                rows,
                self.engine.sample(
                    [Request(contexts[i], caps[i], seeds[i]) for i in rows],
                    self.sampling_parameters(),
                ),
                strict=True,
            )
        )
        replies = []
        for i, (ledger, context) in enumerate(zip(ledgers, contexts, strict=True)):
            if i not in sampled:
                replies.append(context_too_long(len(context), window))
                continue
            replies.append(ledger.add_policy_turn(sampled[i].token_ids, sampled[i].logprobs))
        return replies
