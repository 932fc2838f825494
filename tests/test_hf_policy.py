"""HFPolicy and checkpoints on the real embedded model (SmolLM2-135M, float32 on the CPU)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trustee_rl.policy.hf_policy import HFPolicy
from trustee_rl.policy.ledger import TokenLedger
from trustee_rl.policy.model import load_policy, save_policy
from trustee_rl.schema import Message

from .conftest import WEATHER

pytestmark = pytest.mark.embedded

OPENING = [
    Message(role="system", content="You are a weather assistant."),
    Message(role="user", content="What's the weather in Oslo?"),
]


@pytest.fixture(scope="module")
def policy() -> Iterator[HFPolicy]:
    # Two OpenMP threads on two cores slow down ~8x whenever anything else runs (measured);
    # one thread is about as fast alone and keeps these tests quick on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield HFPolicy.load("embedded", max_new_tokens=16, temperature=1.0)
    torch.set_num_threads(threads)


def context(policy: HFPolicy, messages: list[Message]) -> list[int]:
    chat_format = policy.chat_format
    return chat_format.encode(chat_format.render(messages, [WEATHER], True))


def test_seeded_generation_is_reproducible(policy: HFPolicy) -> None:
    ids = context(policy, OPENING)
    first = policy.generate(ids, max_new_tokens=12, temperature=1.0, seed=7)
    policy.generate(ids, max_new_tokens=12, temperature=1.0, seed=8)
    assert policy.generate(ids, max_new_tokens=12, temperature=1.0, seed=7) == first
    assert 0 < len(first) <= 12


def test_generation_stops_at_the_end_of_turn_token(policy: HFPolicy) -> None:
    ids = context(policy, [Message(role="user", content="Say hi.")])
    new = policy.generate(ids, max_new_tokens=64, temperature=0, seed=0)
    end = policy.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert new[-1] == end and end not in new[:-1]
    assert len(new) < 64


async def test_act_returns_an_assistant_message(policy: HFPolicy) -> None:
    reply = await policy.act(OPENING, [WEATHER], seed=3)
    assert reply.role == "assistant"
    assert reply.content or reply.tool_calls
    assert 0 < reply.usage.completion_tokens <= policy.max_new_tokens
    assert reply.usage.prompt_tokens == len(context(policy, OPENING))
    assert reply.latency_s > 0


def test_prefill_is_forced_and_masked_out(policy: HFPolicy) -> None:
    forced = HFPolicy(
        policy.network,
        policy.tokenizer,
        policy.chat_format,
        max_new_tokens=24,
        prefill="<tool_call>\n",
    )
    ledger = TokenLedger(policy.tokenizer, policy.chat_format)
    ledger.start(OPENING, [WEATHER])
    reply = forced.sample_turn(ledger, seed=0)

    prefill_length = len(policy.chat_format.encode("<tool_call>\n"))
    assert ledger.completion_mask[:prefill_length] == [0] * prefill_length
    assert all(ledger.completion_mask[prefill_length:])
    assert ledger.completion_ids[-1] == policy.chat_format.end_of_turn_id
    # The forced "<tool_call>" makes every reply a call, parsed or kept with its parse error.
    assert reply.tool_calls


def test_saved_checkpoint_reloads_with_identical_logits(policy: HFPolicy, tmp_path: Path) -> None:
    save_policy(policy.network, policy.tokenizer, tmp_path)
    assert not list(tmp_path.glob("*.gguf"))
    assert "quantization_config" not in json.loads((tmp_path / "config.json").read_text())

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert tokenizer.chat_template == policy.tokenizer.chat_template
    ids = torch.tensor([context(policy, OPENING)])
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, policy.network(ids).logits)

    model, _ = load_policy(str(tmp_path))
    assert model.dtype == torch.float32


def test_load_policy_reports_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_policy(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match=r"no config\.json"):
        load_policy(str(tmp_path))
