"""Golden tests of the token ledger (and the chat formats under it) on SmolLM2's real tokenizer."""

from __future__ import annotations

import json
from typing import Any

import pytest
from transformers import AutoTokenizer, BatchEncoding, PreTrainedTokenizerBase

from trustee_rl.lm.hermes import to_text_messages
from trustee_rl.policy.chat import (
    QWEN_CHAT_TEMPLATE,
    ChatFormat,
    ChatMLHermesFormat,
    QwenFormat,
    chat_format_for,
    detect_chat_format,
)
from trustee_rl.policy.ledger import TemplateError, TokenLedger
from trustee_rl.policy.model import embedded_checkpoint
from trustee_rl.schema import Message, ToolCall

from .conftest import DELETE, WEATHER

TOOLS = [WEATHER, DELETE]


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerBase:
    loaded: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(embedded_checkpoint())
    return loaded


@pytest.fixture(params=["chatml-hermes", "qwen"])
def chat_format(request: pytest.FixtureRequest, tokenizer: PreTrainedTokenizerBase) -> ChatFormat:
    return chat_format_for(request.param, tokenizer)


def call(city: str) -> ToolCall:
    return ToolCall(name="get_weather", arguments={"city": city})


def result(content: dict[str, Any]) -> Message:
    return Message(role="tool", content=json.dumps(content), name="get_weather")


CONVERSATION = [
    Message(role="system", content="You are a weather assistant."),
    Message(role="user", content="Is it cold where I'm going?"),
    Message(role="assistant", content="Where are you going?"),
    Message(role="user", content="São Paulo, then Oslo and Rome."),
    Message(role="assistant", tool_calls=[call("São Paulo")]),
    result({"temperature": 28, "summary": "Humid"}),
    Message(
        role="assistant", content="Now the other two.", tool_calls=[call("Oslo"), call("Rome")]
    ),
    result({"temperature": -3, "summary": "Snow"}),
    result({"temperature": 17, "summary": "Clear"}),
    Message(role="assistant", content="São Paulo 28 °C, Oslo -3 °C ❄️, Rome 17 °C."),
    Message(role="user", content="Thanks!\n\nThat's all."),
    Message(role="assistant", content="Safe travels!"),
]


def assistant_text(message: Message) -> str:
    """The text a model writes for this turn: prose, then `<tool_call>` blocks."""
    return str(to_text_messages([message], [])[0]["content"])


def golden_ids(
    tokenizer: PreTrainedTokenizerBase, chat_format: ChatFormat, conversation: list[Message]
) -> list[int]:
    """The whole conversation tokenized in one go by the template, independently of the ledger."""
    if chat_format.name == "chatml-hermes":
        encoded = tokenizer.apply_chat_template(to_text_messages(conversation, TOOLS))
    else:
        encoded = tokenizer.apply_chat_template(
            [openai_message(m) for m in conversation],
            tools=[tool.to_openai() for tool in TOOLS],
            chat_template=QWEN_CHAT_TEMPLATE,
        )
    assert isinstance(encoded, BatchEncoding)
    ids: list[int] = encoded["input_ids"]
    return ids


def openai_message(message: Message) -> dict[str, Any]:
    rendered = message.to_openai()
    rendered["content"] = rendered["content"] or ""
    for item in rendered.get("tool_calls", []):
        item["function"]["arguments"] = json.loads(item["function"]["arguments"])
    return rendered


def assistant_mask(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> list[int]:
    """1 from after each `<|im_start|>assistant\\n` header through its `<|im_end|>`, else 0."""
    header = tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    mask, inside, position = [0] * len(ids), False, 0
    while position < len(ids):
        if not inside and ids[position : position + len(header)] == header:
            position += len(header)
            inside = True
            continue
        if inside:
            mask[position] = 1
            inside = ids[position] != end
        position += 1
    return mask


def play(ledger: TokenLedger, conversation: list[Message]) -> list[Message]:
    """Drive the ledger through `conversation`; each assistant turn is "sampled" as the tokens
    of its own text plus the end-of-turn token."""
    first = next(i for i, m in enumerate(conversation) if m.role == "assistant")
    ledger.start(conversation[:first], TOOLS)
    return ledger.add_written(conversation[first:])


def test_ledger_reproduces_the_whole_conversation_tokens_and_mask(
    tokenizer: PreTrainedTokenizerBase, chat_format: ChatFormat
) -> None:
    ledger = TokenLedger(tokenizer, chat_format)
    replies = play(ledger, CONVERSATION)

    expected = golden_ids(tokenizer, chat_format, CONVERSATION)
    newline = tokenizer.encode("\n", add_special_tokens=False)
    # The ledger stops right after the last <|im_end|>; the template adds a newline after it.
    assert ledger.prompt_ids + ledger.completion_ids + newline == expected
    assert ledger.context_ids == expected[:-1]

    mask = assistant_mask(tokenizer, expected[:-1])
    prompt_length = len(ledger.prompt_ids)
    assert sum(mask[:prompt_length]) == 0
    assert ledger.completion_mask == mask[prompt_length:]
    assert ledger.num_policy_tokens == sum(mask)

    end = chat_format.end_of_turn_id
    policy_ids = [
        i for i, m in zip(ledger.completion_ids, ledger.completion_mask, strict=True) if m
    ]
    turns = [m for m in CONVERSATION if m.role == "assistant"]
    assert policy_ids.count(end) == len(turns)
    assert tokenizer.decode(policy_ids) == "".join(assistant_text(m) + "<|im_end|>" for m in turns)

    assert [(r.content, [(c.name, c.arguments) for c in r.tool_calls]) for r in replies] == [
        (m.content.strip() if m.content else None, [(c.name, c.arguments) for c in m.tool_calls])
        for m in turns
    ]
    assert ledger.messages[-1] is replies[-1]


def test_sampled_tokens_are_kept_verbatim_where_retokenizing_would_change_them(
    tokenizer: PreTrainedTokenizerBase, chat_format: ChatFormat
) -> None:
    # After the header's "\n" the model samples " " then " Safe"; encoding the rendered
    # conversation instead merges "\n " into one token, a sequence the policy never produced.
    ledger = TokenLedger(tokenizer, chat_format)
    ledger.start(CONVERSATION[:2], TOOLS)
    sampled = chat_format.encode("  Safe travels!")
    reply = ledger.add_policy_turn([*sampled, chat_format.end_of_turn_id])

    assert reply.content == "Safe travels!"
    assert ledger.completion_ids == [*sampled, chat_format.end_of_turn_id]
    conversation = [*CONVERSATION[:2], Message(role="assistant", content="  Safe travels!")]
    retokenized = chat_format.encode(chat_format.render(conversation, TOOLS, False))
    # Same text, other tokens (the trailing newline aside).
    assert tokenizer.decode(retokenized[:-1]) == tokenizer.decode(ledger.context_ids)
    assert retokenized[:-1] != ledger.context_ids


def test_both_formats_render_the_same_text(tokenizer: PreTrainedTokenizerBase) -> None:
    hermes, qwen = ChatMLHermesFormat(tokenizer), QwenFormat(tokenizer)
    for end in range(2, len(CONVERSATION) + 1):
        for generation_prompt in (False, True):
            assert hermes.render(CONVERSATION[:end], TOOLS, generation_prompt) == qwen.render(
                CONVERSATION[:end], TOOLS, generation_prompt
            )
    # Without a system message the tools still get a system turn, alone in it.
    opening = [Message(role="user", content="Hi")]
    text = qwen.render(opening, TOOLS, True)
    assert text.startswith("<|im_start|>system\n# Tools\n")
    assert hermes.render(opening, TOOLS, True) == text


def test_truncated_turn_is_closed_by_an_end_token_it_is_not_trained_on(
    tokenizer: PreTrainedTokenizerBase, chat_format: ChatFormat
) -> None:
    ledger = TokenLedger(tokenizer, chat_format)
    prompt = ledger.start(CONVERSATION[:2], TOOLS)
    cut = chat_format.encode(
        'I will check.\n<tool_call>\n{"name": "get_weather", "arguments": {"ci'
    )
    reply = ledger.add_policy_turn(cut)

    assert ledger.completion_ids == [*cut, chat_format.end_of_turn_id]
    assert ledger.completion_mask == [1] * len(cut) + [0]
    assert ledger.truncated_turns == 1
    assert reply.content == "I will check."
    assert reply.tool_calls[0].parse_error is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (len(prompt), len(cut))

    follow_up = Message(role="user", content="Oslo.")
    context = ledger.add_environment([follow_up])
    # The context is well formed: a fresh rendering of the conversation so far, token for token.
    assert context[len(prompt) + len(cut) + 1 :] == chat_format.encode(
        "\n" + "<|im_start|>user\nOslo.<|im_end|>\n<|im_start|>assistant\n"
    )


def test_sampling_logprobs_are_kept_beside_the_policys_tokens(
    tokenizer: PreTrainedTokenizerBase, chat_format: ChatFormat
) -> None:
    ledger = TokenLedger(tokenizer, chat_format)
    ledger.start(CONVERSATION[:2], TOOLS)
    cut = chat_format.encode("Where are")
    scores = [-0.5 - i for i in range(len(cut))]
    ledger.add_policy_turn(cut, scores)  # cut at its cap: closed by an unsampled end-of-turn
    ledger.add_environment([CONVERSATION[3]])
    closed = [*chat_format.encode("Oslo?"), chat_format.end_of_turn_id]
    ledger.add_policy_turn(closed, [-1.0] * len(closed))

    logprobs = ledger.sampling_logprobs
    assert logprobs is not None and len(logprobs) == len(ledger.completion_ids)
    sampled = [lp for lp, m in zip(logprobs, ledger.completion_mask, strict=True) if m]
    assert sampled == [*scores, *[-1.0] * len(closed)]
    # Environment tokens and the end-of-turn that closed the cut turn hold the placeholder.
    assert all(lp == 0.0 for lp, m in zip(logprobs, ledger.completion_mask, strict=True) if not m)

    ledger.add_environment([CONVERSATION[3]])
    with pytest.raises(ValueError, match="with and without"):
        ledger.add_policy_turn(closed)
    unscored = TokenLedger(tokenizer, chat_format)
    unscored.start(CONVERSATION[:2], TOOLS)
    with pytest.raises(ValueError, match="2 sampling logprobs for 1"):
        unscored.add_policy_turn([chat_format.end_of_turn_id], [-1.0, -2.0])
    with pytest.raises(ValueError, match="not finite"):
        unscored.add_policy_turn([chat_format.end_of_turn_id], [float("nan")])
    unscored.add_policy_turn([chat_format.end_of_turn_id])
    assert unscored.sampling_logprobs is None


def test_a_template_that_breaks_the_prefix_property_fails_loudly(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    # Like Qwen3's: the last assistant turn is rendered with an (empty) thinking block.
    template = (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{% if loop.last and message['role'] == 'assistant' %}<think>\n\n</think>\n\n{% endif %}"
        "{{ message['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    chat_format = ChatMLHermesFormat(tokenizer, chat_template=template)
    ledger = TokenLedger(tokenizer, chat_format)
    ledger.start(CONVERSATION[:2], TOOLS)
    ledger.add_policy_turn([*chat_format.encode("Where to?"), chat_format.end_of_turn_id])
    with pytest.raises(TemplateError, match="prefix property"):
        ledger.add_environment([CONVERSATION[3]])


def test_ledger_refuses_calls_out_of_order(
    tokenizer: PreTrainedTokenizerBase, chat_format: ChatFormat
) -> None:
    ledger = TokenLedger(tokenizer, chat_format)
    with pytest.raises(RuntimeError):
        ledger.add_policy_turn([1])
    ledger.start(CONVERSATION[:2], TOOLS)
    with pytest.raises(RuntimeError):
        ledger.add_environment([CONVERSATION[3]])
    end = chat_format.end_of_turn_id
    with pytest.raises(ValueError, match="padding"):
        ledger.add_policy_turn([*chat_format.encode("Hi"), end, end])
    ledger.add_policy_turn([*chat_format.encode("Hi"), end])
    with pytest.raises(RuntimeError):
        ledger.add_policy_turn([end])
    with pytest.raises(ValueError):
        TokenLedger(AutoTokenizer.from_pretrained(embedded_checkpoint()), chat_format)


def test_format_detection_and_reply_parsing(
    tokenizer: PreTrainedTokenizerBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert detect_chat_format(tokenizer) == "chatml-hermes"
    monkeypatch.setattr(tokenizer, "chat_template", QWEN_CHAT_TEMPLATE)
    assert detect_chat_format(tokenizer) == "qwen"
    assert isinstance(chat_format_for("auto", tokenizer), QwenFormat)
    with pytest.raises(ValueError, match="unknown chat format"):
        chat_format_for("llama3", tokenizer)

    qwen = QwenFormat(tokenizer)
    assert qwen.end_of_turn_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    reply = qwen.parse_reply(
        '<think>\nOslo, surely.\n</think>\n\n<tool_call>\n{"name": "get_weather", '
        '"arguments": {"city": "Oslo"}}\n</tool_call>'
    )
    assert (reply.role, reply.content) == ("assistant", None)
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [("get_weather", {"city": "Oslo"})]
    assert qwen.parse_reply("<think>cut off at max tok").content is None
    assert ChatMLHermesFormat(tokenizer).parse_reply("<think>x</think>Hi").content == (
        "<think>x</think>Hi"
    )
