"""Self-describing checkpoints: the chat template saved with a policy renders tools, calls and
results as OpenAI-compatible servers pass them (vLLM with `--tool-call-parser hermes`) into exactly
the text, and tokens, the policy was trained on. On SmolLM2's real tokenizer; no weights loaded."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from trustee_rl.lm.hermes import to_text_messages, tools_system_prompt
from trustee_rl.policy.chat import (
    ChatFormat,
    ChatMLHermesFormat,
    ChatTemplateMismatch,
    chat_format_for,
    detect_chat_format,
)
from trustee_rl.policy.ledger import TokenLedger
from trustee_rl.policy.model import embedded_checkpoint, save_policy, save_tokenizer
from trustee_rl.schema import Message, ToolCall

from .conftest import DELETE, WEATHER

TOOLS = [WEATHER, DELETE]
SPECS = [tool.to_openai() for tool in TOOLS]  # what a client sends as `tools`
FORMAT_NAMES = ["chatml-hermes", "qwen"]

CALL = ToolCall(id="call_1", name="get_weather", arguments={"city": "São Paulo", "unit": "celsius"})
CONVERSATION = [
    Message(role="system", content="You are a weather assistant."),
    Message(role="user", content="How warm is São Paulo?"),
    Message(role="assistant", tool_calls=[CALL]),
    Message(
        role="tool",
        content='{"temperature": 28, "summary": "Humid"}',
        tool_call_id="call_1",
        name="get_weather",
    ),
    Message(role="assistant", content="28 °C and humid."),
]


def wire(messages: list[Message]) -> list[dict[str, Any]]:
    """The conversation as a client sends it: no content beside calls, arguments JSON-encoded
    with non-ASCII kept (a string reaches the prompt as sent; `ToolCall.to_openai` escapes it)."""
    sent = []
    for message in messages:
        item = message.to_openai()
        for call in item.get("tool_calls", []):
            arguments = json.loads(call["function"]["arguments"])
            call["function"]["arguments"] = json.dumps(arguments, ensure_ascii=False)
        sent.append(item)
    return sent


def as_vllm_passes(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What vLLM hands the template: call arguments decoded to objects."""
    decoded = copy.deepcopy(messages)
    for message in decoded:
        for call in message.get("tool_calls", []):
            call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    return decoded


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerBase:
    loaded: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(embedded_checkpoint())
    return loaded


def saved(tokenizer: PreTrainedTokenizerBase, chat_format: ChatFormat, out: Path) -> Any:
    save_tokenizer(tokenizer, out, chat_format)
    return AutoTokenizer.from_pretrained(out, local_files_only=True)


def served(
    checkpoint: Any,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    generation_prompt: bool,
) -> str:
    text = checkpoint.apply_chat_template(
        messages, tools=tools, tokenize=False, add_generation_prompt=generation_prompt
    )
    assert isinstance(text, str)
    return text


@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_saved_template_renders_every_turn_as_training_did(
    tokenizer: PreTrainedTokenizerBase, name: str, tmp_path: Path
) -> None:
    chat_format = chat_format_for(name, tokenizer)
    checkpoint = saved(tokenizer, chat_format, tmp_path)
    assert checkpoint.chat_template != tokenizer.chat_template
    for end in range(1, len(CONVERSATION) + 1):
        for generation_prompt in (False, True):
            trained = chat_format.render(CONVERSATION[:end], TOOLS, generation_prompt)
            sent = wire(CONVERSATION[:end])
            for messages in (sent, as_vllm_passes(sent)):
                assert served(checkpoint, messages, SPECS, generation_prompt) == trained
    full = served(checkpoint, as_vllm_passes(wire(CONVERSATION)), SPECS, False)
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "São Paulo"' in full
    assert full.count("<|im_start|>system\n") == 1 and "# Tools" in full


@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_a_server_prompts_with_the_ledgers_very_tokens(
    tokenizer: PreTrainedTokenizerBase, name: str, tmp_path: Path
) -> None:
    chat_format = chat_format_for(name, tokenizer)
    checkpoint = saved(tokenizer, chat_format, tmp_path)
    ledger = TokenLedger(tokenizer, chat_format)

    def prompt(messages: list[Message], generation_prompt: bool) -> list[int]:
        text = served(checkpoint, as_vllm_passes(wire(messages)), SPECS, generation_prompt)
        return chat_format.encode(text)

    assert ledger.start(CONVERSATION[:2], TOOLS) == prompt(CONVERSATION[:2], True)
    ledger.add_policy_turn(chat_format.reply_ids(CONVERSATION[2]))
    assert ledger.add_environment([CONVERSATION[3]]) == prompt(CONVERSATION[:4], True)
    ledger.add_policy_turn(chat_format.reply_ids(CONVERSATION[4]))
    # The ledger ends at the policy's last <|im_end|>; the template writes a newline after it.
    newline = chat_format.encode("\n")
    assert ledger.context_ids + newline == prompt(CONVERSATION, False)


@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_conversations_without_a_system_message(
    tokenizer: PreTrainedTokenizerBase, name: str, tmp_path: Path
) -> None:
    chat_format = chat_format_for(name, tokenizer)
    checkpoint = saved(tokenizer, chat_format, tmp_path)
    dialogue = CONVERSATION[1:]
    empty_system = [Message(role="system", content=""), *dialogue]
    for conversation in (dialogue, empty_system):
        for tools, specs in (([], None), (TOOLS, SPECS)):
            for generation_prompt in (False, True):
                trained = chat_format.render(conversation, tools, generation_prompt)
                sent = wire(conversation)
                assert served(checkpoint, sent, specs, generation_prompt) == trained
    with_tools = served(checkpoint, wire(dialogue), SPECS, True)
    assert with_tools.startswith("<|im_start|>system\n# Tools\n")
    # Without tools a chatml-hermes model is trained behind its own default system turn.
    without = served(checkpoint, wire(dialogue), None, True)
    assert ("SmolLM" in without) == (name == "chatml-hermes")


def test_tools_go_into_the_opening_system_turn_only() -> None:
    later = Message(role="system", content="Answer in one line.")
    rendered = to_text_messages([*CONVERSATION[1:3], later], TOOLS)
    assert [m["role"] for m in rendered] == ["system", "user", "assistant", "system"]
    assert rendered[0]["content"] == tools_system_prompt("", TOOLS)
    assert rendered[3]["content"] == later.content


@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_a_later_system_message_is_served_as_trained(
    tokenizer: PreTrainedTokenizerBase, name: str, tmp_path: Path
) -> None:
    chat_format = chat_format_for(name, tokenizer)
    checkpoint = saved(tokenizer, chat_format, tmp_path)
    conversation = [*CONVERSATION, Message(role="system", content="Answer in one line.")]
    for generation_prompt in (False, True):
        trained = chat_format.render(conversation, TOOLS, generation_prompt)
        assert served(checkpoint, wire(conversation), SPECS, generation_prompt) == trained
        assert trained.count("# Tools") == 1


@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_a_checkpoint_reloads_in_the_format_it_was_trained_in(
    tokenizer: PreTrainedTokenizerBase, name: str, tmp_path: Path
) -> None:
    chat_format = chat_format_for(name, tokenizer)
    checkpoint = saved(tokenizer, chat_format, tmp_path / "first")
    assert detect_chat_format(checkpoint) == name
    reloaded = chat_format_for("auto", checkpoint)
    for generation_prompt in (False, True):
        assert reloaded.render(CONVERSATION, TOOLS, generation_prompt) == chat_format.render(
            CONVERSATION, TOOLS, generation_prompt
        )
    # A checkpoint trained on further saves the same template again.
    assert saved(checkpoint, reloaded, tmp_path / "again").chat_template == checkpoint.chat_template


def test_save_policy_writes_the_template_and_leaves_the_live_tokenizer_alone(
    tokenizer: PreTrainedTokenizerBase, tmp_path: Path
) -> None:
    # A one-layer model of the right vocabulary: save_policy's own path, without loading weights.
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    original = tokenizer.chat_template
    chat_format = ChatMLHermesFormat(tokenizer)
    save_policy(LlamaForCausalLM(config), tokenizer, tmp_path)  # the format is detected
    assert tokenizer.chat_template == original
    checkpoint = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert checkpoint.chat_template == chat_format.serving_template()
    sent = as_vllm_passes(wire(CONVERSATION))
    assert served(checkpoint, sent, SPECS, True) == chat_format.render(CONVERSATION, TOOLS, True)
    # The model's own template, by contrast, never shows the tools.
    assert "get_weather" not in served(tokenizer, sent[:2], SPECS, False)


def test_a_template_the_tool_template_cannot_reproduce_is_refused(
    tokenizer: PreTrainedTokenizerBase, tmp_path: Path
) -> None:
    trimming = (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
        "message['content'] | trim + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    chat_format = ChatMLHermesFormat(tokenizer, chat_template=trimming)
    with pytest.raises(ChatTemplateMismatch):
        chat_format.serving_template()
    # The checkpoint is still written, with the model's own template, and says why.
    with pytest.warns(UserWarning, match="without tool-aware chat template"):
        save_tokenizer(tokenizer, tmp_path, chat_format)
    checkpoint = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert checkpoint.chat_template == tokenizer.chat_template
