"""The one policy seam: the factory for every model spec, and both backends behind `Policy.act`
(the real embedded model in transformers, and a loopback OpenAI-compatible server)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from trustee_rl.cli import app
from trustee_rl.policy.base import Conversation
from trustee_rl.policy.factory import open_policy, open_transformers_policy
from trustee_rl.policy.generate import Generator
from trustee_rl.policy.lm import LMPolicy
from trustee_rl.policy.model import load_policy, save_policy
from trustee_rl.policy.transformers import TransformersPolicy
from trustee_rl.schema import Message
from trustee_rl.store import RunStore
from trustee_rl.testing.openai_server import AgentResponder, LoopbackOpenAIServer

from .conftest import WEATHER

OPENING = [
    Message(role="system", content="You are a weather assistant."),
    Message(role="user", content="What's the weather in Oslo?"),
]


@pytest.fixture(scope="module")
def policy() -> Iterator[TransformersPolicy]:
    # Two OpenMP threads on two cores slow down ~8x whenever anything else runs (measured);
    # one thread is about as fast alone and keeps these tests quick on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield open_transformers_policy("embedded", max_new_tokens=16, temperature=1.0)
    torch.set_num_threads(threads)


@pytest.mark.embedded
async def test_a_batch_of_conversations_gets_one_reply_each(policy: TransformersPolicy) -> None:
    other = [Message(role="user", content="Say hi.")]
    replies = await policy.act(
        [
            Conversation(OPENING, [WEATHER]),
            Conversation(other, []),
            Conversation(OPENING, [WEATHER]),
        ]
    )
    assert [reply.role for reply in replies] == ["assistant"] * 3
    for reply in replies:
        assert reply.content or reply.tool_calls
        assert 0 < reply.usage.completion_tokens <= policy.max_new_tokens
    context = policy.chat_format.encode(policy.chat_format.render(OPENING, [WEATHER], True))
    assert replies[0].usage.prompt_tokens == len(context)
    assert policy.trainable and policy.name == "embedded"


@pytest.mark.embedded
async def test_the_ledger_holds_exactly_what_the_policy_sampled(policy: TransformersPolicy) -> None:
    ledger = policy.new_ledger()
    (first,) = await policy.act([Conversation(OPENING, [WEATHER], ledger=ledger, max_tokens=5)])
    end = policy.chat_format.end_of_turn_id
    assert ledger.completion_ids[-1] == end
    assert ledger.num_policy_tokens <= 5  # the cap; a cut turn's closing token is not the policy's
    assert ledger.prompt_ids == policy.chat_format.encode(
        policy.chat_format.render(OPENING, [WEATHER], True)
    )
    # The next turn extends the same ledger with the environment's messages, masked out.
    answer = Message(role="user", content="Oslo, in celsius please.")
    before = len(ledger.completion_ids)
    await policy.act([Conversation([*OPENING, first, answer], [WEATHER], ledger=ledger)])
    assert len(ledger.messages) == 5
    environment_part = ledger.completion_mask[before:]
    assert environment_part[0] == 0 and 1 in environment_part
    # The turn ends with end-of-turn: sampled (mask 1), or appended after a cut (mask 0).
    assert ledger.completion_ids[-1] == end
    assert environment_part[-1] == (0 if ledger.truncated_turns == 2 else 1)


@pytest.mark.embedded
def test_saved_checkpoint_reloads_with_identical_logits(
    policy: TransformersPolicy, tmp_path: Path
) -> None:
    save_policy(policy.model, policy.tokenizer, tmp_path)
    assert not list(tmp_path.glob("*.gguf"))
    assert "quantization_config" not in json.loads((tmp_path / "config.json").read_text())
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert tokenizer.chat_template == policy.chat_format.serving_template()
    ids = torch.tensor([policy.chat_format.encode("<|im_start|>user\nHi<|im_end|>\n")])
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, policy.model(ids).logits)
    model, _ = load_policy(str(tmp_path))
    assert model.dtype == torch.float32


def test_load_policy_reports_bad_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a hub id is looked up in the local cache only
    with pytest.raises(ValueError, match="no such checkpoint dir"):
        load_policy(str(tmp_path / "missing" / "final"))
    with pytest.raises(ValueError, match=r"no config\.json"):
        load_policy(str(tmp_path))
    with pytest.raises(ValueError, match="could not be loaded"):
        load_policy("no-such-org/no-such-model")


async def test_a_server_url_gives_a_policy_that_is_not_trainable() -> None:
    with LoopbackOpenAIServer(AgentResponder(seed=0)) as server:
        policy = open_policy(server.base_url, model_name="loopback-model")
        assert isinstance(policy, LMPolicy) and not policy.trainable
        assert policy.name == f"loopback-model@{server.base_url}"
        replies = await policy.act(
            [Conversation(OPENING, [WEATHER], seed=1), Conversation(OPENING, [WEATHER], seed=2)]
        )
        await policy.aclose()
    assert all(reply.tool_calls and reply.tool_calls[0].name == "get_weather" for reply in replies)
    assert all(request["tools"] for request in server.requests)


@pytest.mark.embedded
def test_simulate_plays_a_trained_checkpoint(policy: TransformersPolicy, tmp_path: Path) -> None:
    checkpoint = save_policy(policy.model, policy.tokenizer, tmp_path / "final")
    with LoopbackOpenAIServer(AgentResponder(seed=0)) as server:
        result = CliRunner().invoke(
            app,
            [
                "simulate",
                "--run-dir",
                str(tmp_path / "run"),
                "--episodes",
                "2",
                "--policy",
                str(checkpoint),
                "--simulator",
                server.base_url,
                "--set",
                "policy_max_tokens=24",
                "--judge",
                "rules",
                "--json",
            ],
        )
    assert result.exit_code == 0, result.output
    with RunStore.open(tmp_path / "run", readonly=True) as store:
        episodes = store.episodes()
        assert len(episodes) == 2
        # A checkpoint's label names it and a digest of its weights.
        assert {episode.policy_model.split("#")[0] for episode in episodes} == {
            f"{tmp_path.name}/final"
        }
        assert all(
            message.usage.completion_tokens > 0
            for episode in episodes
            for message in episode.messages
            if message.role == "assistant"
        )


@pytest.mark.embedded
def test_generation_stops_where_a_stop_string_is_written(policy: TransformersPolicy) -> None:
    """The mechanism behind `stop_after_call`: a row ends at the first stop string it writes."""
    context = policy.chat_format.encode(
        policy.chat_format.render(
            [Message(role="user", content="Tell me about the sea.")], [], True
        )
    )
    plain = Generator(policy.model, policy.generator.pad_id, policy.chat_format.stop_ids, 0.0)
    (free,) = plain([context], 48)
    text = policy.chat_format.decode(free)
    word = next(w for w in text.split()[3:] if w.isalpha())  # a word written some way in
    stopping = Generator(
        policy.model,
        policy.generator.pad_id,
        policy.chat_format.stop_ids,
        0.0,
        tokenizer=policy.tokenizer,
        stop_strings=(" " + word,),
    )
    (stopped,) = stopping([context], 48)
    cut = policy.chat_format.decode(stopped)
    assert len(stopped) < len(free)
    assert (" " + word) in cut and cut.count(" " + word) == 1
    assert text.startswith(cut.split(" " + word)[0] + " " + word)


@pytest.mark.embedded
def test_bf16_generation_follows_the_weights_as_they_train(policy: TransformersPolicy) -> None:
    """On a CPU, bf16 generation decodes with a bf16 copy of the weights: it must be refreshed
    every call, or a trainer's rollouts would sample from a policy steps old."""
    context = policy.chat_format.encode(
        policy.chat_format.render([Message(role="user", content="Name three rivers.")], [], True)
    )
    pad, stops = policy.generator.pad_id, policy.chat_format.stop_ids
    generator = Generator(policy.model, pad, stops, 0.0, bf16=True)
    (before,) = generator([context], 8)
    weight = policy.model.model.layers[-1].mlp.down_proj.weight
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.mul_(-4.0)  # a "training step" big enough to change the greedy reply
        (after,) = generator([context], 8)
        (fresh,) = Generator(policy.model, pad, stops, 0.0, bf16=True)([context], 8)
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    assert after == fresh
    assert after != before
    assert all(p.dtype == torch.float32 for p in policy.model.parameters())  # untouched
