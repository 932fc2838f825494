"""How a conversation becomes the text a policy model reads, and how its reply becomes a Message.

Two formats, both ChatML turns with the Hermes/Qwen tool syntax, differing in who renders the tools:
  - "chatml-hermes": a ChatML model whose template knows only `content` strings (SmolLM2). Tools,
    calls and results are mapped to plain text turns first (`hermes.to_text_messages`), then the
    model's own template renders them.
  - "qwen": a template that takes `tools=`, assistant `tool_calls` and role "tool" messages natively,
    grouping consecutive tool results into one user turn. Ours (`QWEN_CHAT_TEMPLATE`) reproduces
    Qwen3's published template without its thinking logic, which re-renders earlier assistant turns
    depending on what follows them and so breaks the prefix property the token ledger relies on.
For a conversation that opens with a system message both give the same text.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

from trustee_rl.lm.hermes import (
    TOOLS_POSTAMBLE,
    TOOLS_PREAMBLE,
    parse_assistant_text,
    to_text_messages,
)
from trustee_rl.schema import Message, Tool

END_OF_TURN = "<|im_end|>"
AUTO = "auto"

ToolSpecs = list[dict[Any, Any] | Callable[..., Any]]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_QWEN_TEMPLATE_SOURCE = """\
{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\\n\\n' }}
    {%- endif %}
    {{- TOOLS_PREAMBLE }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n" + TOOLS_POSTAMBLE + "<|im_end|>\\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == "user" or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>assistant\\n' + message.content }}
        {%- for tool_call in message.tool_calls or [] %}
            {%- if (loop.first and message.content) or not loop.first %}
                {{- '\\n' }}
            {%- endif %}
            {%- if tool_call.function %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '<tool_call>\\n{"name": "' + tool_call.name + '", "arguments": ' }}
            {%- if tool_call.arguments is string %}
                {{- tool_call.arguments }}
            {%- else %}
                {{- tool_call.arguments | tojson }}
            {%- endif %}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or messages[loop.index0 - 1].role != "tool" %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}
        {%- if loop.last or messages[loop.index0 + 1].role != "tool" %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

# The tools preamble is the one Hermes renderer's (lm/hermes.py), spelled as Jinja string literals.
QWEN_CHAT_TEMPLATE = _QWEN_TEMPLATE_SOURCE.replace(
    "TOOLS_PREAMBLE", json.dumps(TOOLS_PREAMBLE)
).replace("TOOLS_POSTAMBLE", json.dumps(TOOLS_POSTAMBLE))

_THINK_RE = re.compile(r"<think>.*?(?:</think>|$)\s*", re.DOTALL)


class ChatFormat(ABC):
    """Renders conversations for one tokenizer and parses the replies its model writes."""

    name: str

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        chat_template: str | None = None,
        strip_thinking: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.chat_template = chat_template or self._default_template(tokenizer)
        self.strip_thinking = strip_thinking
        self.end_of_turn = END_OF_TURN
        end_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
        if not isinstance(end_id, int) or end_id == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no {END_OF_TURN} token: not a ChatML model")
        self.end_of_turn_id: int = end_id

    @property
    def stop_ids(self) -> list[int]:
        """Ids that end a generated turn."""
        return [self.end_of_turn_id]

    def render(
        self, messages: list[Message], tools: list[Tool], add_generation_prompt: bool
    ) -> str:
        conversation, tool_specs = self._conversation(messages, tools)
        text = self.tokenizer.apply_chat_template(
            conversation,
            tools=tool_specs,
            chat_template=self.chat_template,
            add_generation_prompt=add_generation_prompt,
            tokenize=False,
        )
        if not isinstance(text, str):
            raise TypeError(f"apply_chat_template returned {type(text).__name__}, not text")
        return text

    def encode(self, text: str) -> list[int]:
        """Token ids of rendered text; the template itself writes any special tokens it needs."""
        ids: list[int] = self.tokenizer.encode(text, add_special_tokens=False)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        text = self.tokenizer.decode(list(ids), skip_special_tokens=False)
        if not isinstance(text, str):
            raise TypeError(f"decode returned {type(text).__name__}, not text")
        return text

    def reply_text(self, message: Message) -> str:
        """What the model writes for an assistant turn: its prose, then `<tool_call>` blocks."""
        return str(to_text_messages([message], [])[0]["content"])

    def reply_ids(self, message: Message) -> list[int]:
        """An assistant turn as the tokens the policy would sample, end-of-turn included (for
        demonstrations)."""
        return [*self.encode(self.reply_text(message)), self.end_of_turn_id]

    def parse_reply(self, text: str) -> Message:
        if self.strip_thinking:
            text = _THINK_RE.sub("", text)
        content, calls = parse_assistant_text(text)
        return Message(role="assistant", content=content or None, tool_calls=calls)

    @staticmethod
    @abstractmethod
    def _default_template(tokenizer: PreTrainedTokenizerBase) -> str: ...

    @abstractmethod
    def _conversation(
        self, messages: list[Message], tools: list[Tool]
    ) -> tuple[list[dict[str, Any]], ToolSpecs | None]: ...


class ChatMLHermesFormat(ChatFormat):
    name = "chatml-hermes"

    @staticmethod
    def _default_template(tokenizer: PreTrainedTokenizerBase) -> str:
        template = tokenizer.chat_template
        return template if isinstance(template, str) else CHATML_TEMPLATE

    def _conversation(
        self, messages: list[Message], tools: list[Tool]
    ) -> tuple[list[dict[str, Any]], ToolSpecs | None]:
        if tools and (not messages or messages[0].role != "system"):
            # hermes renders tools into the system turn, so there must be one.
            messages = [Message(role="system", content=""), *messages]
        return to_text_messages(messages, tools), None


class QwenFormat(ChatFormat):
    name = "qwen"

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        chat_template: str | None = None,
        strip_thinking: bool = True,
    ) -> None:
        super().__init__(tokenizer, chat_template=chat_template, strip_thinking=strip_thinking)

    @staticmethod
    def _default_template(tokenizer: PreTrainedTokenizerBase) -> str:
        return QWEN_CHAT_TEMPLATE

    def _conversation(
        self, messages: list[Message], tools: list[Tool]
    ) -> tuple[list[dict[str, Any]], ToolSpecs | None]:
        specs: ToolSpecs = [tool.to_openai() for tool in tools]
        return [_qwen_message(message) for message in messages], specs or None


def _qwen_message(message: Message) -> dict[str, Any]:
    rendered: dict[str, Any] = {"role": message.role, "content": message.content or ""}
    if message.tool_calls:
        rendered["tool_calls"] = [
            {"type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in message.tool_calls
        ]
    if message.role == "tool":
        rendered["tool_call_id"] = message.tool_call_id
        rendered["name"] = message.name
    return rendered


FORMATS: dict[str, type[ChatFormat]] = {
    ChatMLHermesFormat.name: ChatMLHermesFormat,
    QwenFormat.name: QwenFormat,
}


def detect_chat_format(tokenizer: PreTrainedTokenizerBase) -> str:
    """The format's name: "qwen" where the template renders tool calls itself, else
    "chatml-hermes" for a ChatML tokenizer."""
    template = tokenizer.chat_template
    if isinstance(template, str) and "<tool_call>" in template:
        return QwenFormat.name
    if END_OF_TURN in tokenizer.get_vocab():
        return ChatMLHermesFormat.name
    raise ValueError("tokenizer is not a ChatML model: no supported chat format")


def chat_format_for(name: str | None, tokenizer: PreTrainedTokenizerBase) -> ChatFormat:
    """The named format (a key of FORMATS), or with "auto"/None the one detected."""
    name = detect_chat_format(tokenizer) if name in (None, AUTO) else name
    if name not in FORMATS:
        raise ValueError(f"unknown chat format {name!r}: use one of {[AUTO, *FORMATS]}")
    return FORMATS[name](tokenizer)
