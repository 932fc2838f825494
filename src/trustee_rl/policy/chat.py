"""How a conversation becomes the text a policy model reads, and how its reply becomes a Message.

Two formats, both ChatML turns with the Hermes/Qwen tool syntax, differing in who renders the tools:
  - "chatml-hermes": a ChatML model whose template knows only `content` strings (SmolLM2). Tools,
    calls and results are mapped to plain text turns first (`hermes.to_text_messages`), then the
    model's own template renders them.
  - "qwen": a template that takes `tools=`, assistant `tool_calls` and role "tool" messages natively,
    grouping consecutive tool results into one user turn. Ours (`QWEN_CHAT_TEMPLATE`) follows
    Qwen3's published template without its thinking logic, which re-renders earlier assistant turns
    depending on what follows them and so breaks the prefix property the token ledger relies on.
The two give the same text for a conversation with tools or a system message: the tool template
(`tool_chat_template`) is the Hermes renderer written as Jinja. A format's `serving_template` (that
template, plus whatever the model's own template writes for a conversation opening without a
system message) is checked on probe conversations against what the format trains on and saved
with every checkpoint, so a server given the checkpoint shows the model its tools as training did;
the template's mark reloads the checkpoint in its format.
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
from trustee_rl.schema import Message, Tool, ToolCall

END_OF_TURN = "<|im_end|>"
AUTO = "auto"

ToolSpecs = list[dict[Any, Any] | Callable[..., Any]]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# The Hermes renderer (lm/hermes.py: `to_text_messages` then plain ChatML) as one Jinja template.
# Placeholders, filled in by `tool_chat_template`: FORMAT_NAME, the TOOLS_* texts and
# DEFAULT_SYSTEM_TURN, what a model's own template writes for a conversation that opens without a
# system message (SmolLM2's names itself there).
_TOOL_TEMPLATE_SOURCE = """\
{#- trustee-rl chat format: FORMAT_NAME -#}
{%- set opens_with_system = messages and messages[0].role == 'system' %}
{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if opens_with_system and messages[0].content %}
        {{- messages[0].content + '\\n\\n' }}
    {%- endif %}
    {{- TOOLS_PREAMBLE }}
    {%- for tool in tools %}
        {{- '\\n' + (tool | tojson) }}
    {%- endfor %}
    {{- '\\n' + TOOLS_POSTAMBLE + '<|im_end|>\\n' }}
{%- elif opens_with_system %}
    {{- '<|im_start|>system\\n' + (messages[0].content or '') + '<|im_end|>\\n' }}
{%- elif messages %}
    {{- DEFAULT_SYSTEM_TURN }}
{%- endif %}
{%- for message in messages %}
    {%- set content = message.content or '' %}
    {%- if message.role == 'assistant' %}
        {{- '<|im_start|>assistant\\n' + content }}
        {%- for tool_call in message.tool_calls or [] %}
            {%- if content or not loop.first %}
                {{- '\\n' }}
            {%- endif %}
            {%- set call = tool_call.function if tool_call.function is defined else tool_call %}
            {%- set arguments = call.arguments if call.arguments is defined else {} %}
            {#- A JSON string goes in as it came: Jinja cannot decode it (vLLM hands objects). #}
            {{- '<tool_call>\\n{"name": ' + (call.name | tojson) + ', "arguments": ' }}
            {{- arguments if arguments is string else (arguments | tojson) }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == 'tool' %}
        {%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' + content + '\\n</tool_response>' }}
        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- elif not (loop.first and message.role == 'system') %}
        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""
_FORMAT_MARK = re.compile(r"\{#- trustee-rl chat format: ([\w-]+) -#\}")


def tool_chat_template(format_name: str, default_system_turn: str = "") -> str:
    """The tool-aware template, marked with the format it belongs to (so a checkpoint reloads in
    the format it was trained in); texts go in as JSON string literals, which Jinja reads too."""
    return (
        _TOOL_TEMPLATE_SOURCE.replace("FORMAT_NAME", format_name)
        .replace("TOOLS_PREAMBLE", json.dumps(TOOLS_PREAMBLE))
        .replace("TOOLS_POSTAMBLE", json.dumps(TOOLS_POSTAMBLE))
        .replace("DEFAULT_SYSTEM_TURN", json.dumps(default_system_turn))
    )


QWEN_CHAT_TEMPLATE = tool_chat_template("qwen")

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

    def serving_template(self) -> str:
        """The chat template to save with a checkpoint: it takes `tools=`, assistant `tool_calls`
        (arguments as objects, or JSON strings inserted as they are) and role "tool" messages, as
        OpenAI-compatible servers pass them, and renders the very text this format trains on.
        Raises ChatTemplateMismatch where it would not (checked on probe conversations)."""
        template = self._serving_template()
        served = QwenFormat(self.tokenizer, chat_template=template)
        for messages, tools in _probes():
            for generation_prompt in (False, True):
                trained = self.render(messages, tools, generation_prompt)
                if served.render(messages, tools, generation_prompt) != trained:
                    raise ChatTemplateMismatch(
                        f"no tool-aware template renders what {self.name} trains on for this "
                        f"tokenizer: {[message.role for message in messages]} differs"
                    )
        return template

    def _serving_template(self) -> str:
        return self.chat_template

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
        return to_text_messages(messages, tools), None

    def _serving_template(self) -> str:
        # The one thing the model's own template may add: its turn for a conversation that opens
        # without a system message, read off a probe rendering.
        text = self.render([Message(role="user", content=_PROBE_TEXT)], [], False)
        at = text.find(f"<|im_start|>user\n{_PROBE_TEXT}{END_OF_TURN}")
        if at < 0:
            raise ChatTemplateMismatch(f"{self.name}: the model's template is not plain ChatML")
        return tool_chat_template(self.name, default_system_turn=text[:at])


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


class ChatTemplateMismatch(ValueError):
    """No tool-aware template reproduces a format's training text for a tokenizer."""


_PROBE_TEXT = "Probe: São Paulo?"
_PROBE_TOOL = Tool(
    name="probe_weather",
    description="Weather for a city — °C.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)


def _probes() -> list[tuple[list[Message], list[Tool]]]:
    """Conversations that exercise every branch of the tool template: with and without a system
    message and tools, prose and calls in one turn, parallel calls, grouped results, content
    with spaces at its ends."""

    def call(city: str) -> ToolCall:
        return ToolCall(name=_PROBE_TOOL.name, arguments={"city": city})

    def result(text: str) -> Message:
        return Message(role="tool", content=text, name=_PROBE_TOOL.name)

    dialogue = [
        Message(role="user", content=_PROBE_TEXT),
        Message(role="assistant", tool_calls=[call("São Paulo")]),
        result('{"temperature": 28}'),
        Message(role="assistant", content="And Oslo?", tool_calls=[call("Oslo"), call("Rome")]),
        result("snow"),
        result(""),
        Message(role="assistant", content="28 °C.\n"),
        Message(role="user", content=" Thanks.\n\n"),
    ]
    system = Message(role="system", content="Be brief.")
    conversations = [[system, *dialogue], dialogue, [Message(role="system", content=""), *dialogue]]
    return [
        (conversation[:end], tools)
        for conversation in conversations
        for tools in ([_PROBE_TOOL], [])
        for end in range(1, len(conversation) + 1)
    ]


FORMATS: dict[str, type[ChatFormat]] = {
    ChatMLHermesFormat.name: ChatMLHermesFormat,
    QwenFormat.name: QwenFormat,
}


def detect_chat_format(tokenizer: PreTrainedTokenizerBase) -> str:
    """The format's name: the one a checkpoint's template is marked with, else "qwen" where the
    template renders tool calls itself, else "chatml-hermes" for a ChatML tokenizer."""
    template = tokenizer.chat_template
    mark = _FORMAT_MARK.search(template) if isinstance(template, str) else None
    if mark and mark.group(1) in FORMATS:  # a checkpoint saved by this project
        return mark.group(1)
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
