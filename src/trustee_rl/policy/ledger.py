"""The token-in/token-out record of one episode, the sequence a policy-gradient step trains on.

Tokens are never rebuilt by decoding and re-encoding text: the policy's sampled ids go in verbatim,
and each environment turn is rendered and tokenized once, when it arrives. Its tokens are the text
that rendering the conversation with the new turns adds to rendering it without them, cut right
after the policy's end-of-turn token; the template must give the same text for a conversation's
start whatever follows it (the prefix property), and the ledger checks that every time, failing
loudly for a template that breaks it.

Layout: `prompt_ids` is the opening conversation rendered once, up to and including the first
assistant header; `completion_ids` is everything after, with `completion_mask` 1 exactly on
sampled policy tokens (the end-of-turn token closing a turn included, when the policy sampled it),
0 on environment turns, role headers (the assistant's included), the newline after each
end-of-turn and the end-of-turn that closes a turn cut at its cap. The ledger ends right after the
last policy turn's end-of-turn token.

A policy that reports the log-probability it sampled each token with (vLLM) has it kept beside the
token: `sampling_logprobs` is aligned with `completion_ids`, with 0.0 wherever the mask is 0 (the
trainer ignores those positions). A trainer corrects for the sampler differing from the trained
model with them (TRL's importance sampling under vLLM).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from transformers import PreTrainedTokenizerBase

from trustee_rl.policy.base import Conversation
from trustee_rl.policy.chat import ChatFormat
from trustee_rl.schema import Message, Tool, Usage

# The sampling log-probability recorded where the policy sampled nothing (mask 0).
UNSAMPLED_LOGPROB = 0.0


class TemplateError(RuntimeError):
    """The chat template rendered an earlier part of the conversation differently later on."""


class TokenLedger:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, chat_format: ChatFormat) -> None:
        if chat_format.tokenizer is not tokenizer:
            raise ValueError("chat_format was made for another tokenizer")
        self.tokenizer = tokenizer
        self.chat_format = chat_format
        self._messages: list[Message] = []
        self._tools: list[Tool] = []
        self._prompt_ids: list[int] = []
        self._completion_ids: list[int] = []
        self._mask: list[int] = []
        self._logprobs: list[float] = []
        # Whether policy turns come with sampling log-probabilities: all of them or none.
        self._scored: bool | None = None
        # The rendering the current context was tokenized from: it ends with an assistant header.
        self._context_text = ""
        # The conversation rendered through the last policy turn, without a generation prompt.
        self._history_text = ""
        self._started = False
        self._awaiting_policy = False
        # Policy turns cut at their token cap rather than ended by the policy.
        self.truncated_turns = 0

    @property
    def prompt_ids(self) -> list[int]:
        return list(self._prompt_ids)

    @property
    def completion_ids(self) -> list[int]:
        return list(self._completion_ids)

    @property
    def completion_mask(self) -> list[int]:
        return list(self._mask)

    @property
    def sampling_logprobs(self) -> list[float] | None:
        """Per completion token, the log-probability the policy sampled it with (0.0 where the
        mask is 0); None when the policy reported none."""
        return list(self._logprobs) if self._scored else None

    @property
    def context_ids(self) -> list[int]:
        """What the policy reads next: the prompt and everything appended since."""
        return self._prompt_ids + self._completion_ids

    @property
    def num_policy_tokens(self) -> int:
        return sum(self._mask)

    @property
    def messages(self) -> list[Message]:
        return list(self._messages)

    def start(self, messages: list[Message], tools: list[Tool]) -> list[int]:
        """The prompt ids: the whole opening conversation, ending with the assistant header."""
        if self._started:
            raise RuntimeError("start() on a ledger already started")
        if not messages:
            raise ValueError("start() needs the opening messages")
        self._started = True
        self._messages = list(messages)
        self._tools = list(tools)
        self._context_text = self.chat_format.render(self._messages, self._tools, True)
        self._prompt_ids = self.chat_format.encode(self._context_text)
        self._awaiting_policy = True
        return self.prompt_ids

    def add_policy_turn(
        self, token_ids: Sequence[int], logprobs: Sequence[float] | None = None
    ) -> Message:
        """Append the policy's sampled ids verbatim (mask 1) and return the reply they spell;
        `logprobs`, one per id, are what the policy sampled them with, where it reports them.

        A turn cut short (at max tokens, say) gets the end-of-turn id appended with mask 0: the
        sequence stays a well-formed conversation, and the policy is not trained on a token it
        never sampled.
        """
        self._expect_policy()
        end = self.chat_format.end_of_turn_id
        sampled = list(token_ids)
        if end in sampled[:-1]:
            raise ValueError("end-of-turn id inside the turn: strip what follows it (padding?)")
        scores = self._check_logprobs(sampled, logprobs)
        closed = bool(sampled) and sampled[-1] == end
        self.truncated_turns += not closed
        spoken = sampled[:-1] if closed else sampled
        reply = self.chat_format.parse_reply(self.chat_format.decode(spoken))
        reply.usage = Usage(prompt_tokens=len(self.context_ids), completion_tokens=len(sampled))
        history = self.chat_format.render([*self._messages, reply], self._tools, False)
        self._check_prefix(self._context_text, history)
        self._append(sampled, 1, scores)
        self._scored = scores is not None
        if not closed:  # closes the turn, but the policy never sampled it: not trained on
            self._append([end], 0)
        self._messages.append(reply)
        self._history_text = history
        self._awaiting_policy = False
        return reply

    def add_environment(self, messages: list[Message]) -> list[int]:
        """Append the environment's turns and the next assistant header (mask 0); returns the
        context ids for the next generation."""
        if not self._started or self._awaiting_policy:
            raise RuntimeError("add_environment() must follow a policy turn")
        if not messages:
            raise ValueError("add_environment() needs at least one message")
        text = self.chat_format.render([*self._messages, *messages], self._tools, True)
        self._check_prefix(self._history_text, text)
        # The policy's tokens end at its end-of-turn token; what the template writes after it
        # (ChatML's newline) belongs to the environment's part.
        end = self.chat_format.end_of_turn
        cut = self._history_text.rfind(end)
        if cut < len(self._context_text):
            raise TemplateError(f"the template did not close the assistant turn with {end}")
        self._append(self.chat_format.encode(text[cut + len(end) :]), 0)
        self._messages += messages
        self._context_text = text
        self._awaiting_policy = True
        return self.context_ids

    def add_written(self, messages: Sequence[Message]) -> list[Message]:
        """Continue with a written conversation (a demonstration): each assistant turn as the
        tokens of its own text and end-of-turn, the turns between them as the environment's.
        Returns the assistant turns as parsed back from their tokens."""
        replies: list[Message] = []
        pending: list[Message] = []
        for message in messages:
            if message.role != "assistant":
                pending.append(message)
                continue
            if pending:
                self.add_environment(pending)
                pending = []
            replies.append(self.add_policy_turn(self.chat_format.reply_ids(message)))
        return replies

    def _append(self, ids: list[int], mask: int, logprobs: list[float] | None = None) -> None:
        self._completion_ids += ids
        self._mask += [mask] * len(ids)
        self._logprobs += logprobs if logprobs is not None else [UNSAMPLED_LOGPROB] * len(ids)

    def _check_logprobs(
        self, sampled: list[int], logprobs: Sequence[float] | None
    ) -> list[float] | None:
        if self._scored is not None and (logprobs is not None) != self._scored:
            raise ValueError(
                "policy turns with and without sampling logprobs in one ledger: "
                "its policy must report them for every turn or for none"
            )
        if logprobs is None:
            return None
        scores = [float(value) for value in logprobs]
        if len(scores) != len(sampled):
            raise ValueError(f"{len(scores)} sampling logprobs for {len(sampled)} sampled tokens")
        bad = next((i for i, value in enumerate(scores) if not math.isfinite(value)), None)
        if bad is not None:
            raise ValueError(
                f"sampling logprob {scores[bad]} of token {sampled[bad]} is not finite"
            )
        return scores

    def _expect_policy(self) -> None:
        if not self._awaiting_policy:
            raise RuntimeError("the ledger is not waiting for a policy turn")

    @staticmethod
    def _check_prefix(before: str, after: str) -> None:
        if not after.startswith(before):
            at = next(
                (i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b),
                min(len(before), len(after)),
            )
            raise TemplateError(
                f"chat template broke the prefix property at char {at}: "
                f"{before[at : at + 40]!r} became {after[at : at + 40]!r}"
            )


def ledger_for(conversation: Conversation, new_ledger: Callable[[], TokenLedger]) -> TokenLedger:
    """The conversation's ledger brought up to date with its messages (a fresh one when the
    caller keeps none), for a token-in/token-out policy to extend with its next turn."""
    ledger = conversation.ledger
    if ledger is None:
        ledger = new_ledger()
    if not isinstance(ledger, TokenLedger):
        raise TypeError(f"a token-level policy keeps a TokenLedger, not {type(ledger).__name__}")
    known = len(ledger.messages)
    if known == 0:
        ledger.start(conversation.messages, conversation.tools)
    elif len(conversation.messages) > known:
        ledger.add_environment(conversation.messages[known:])
    return ledger


def context_too_long(context_tokens: int, window: int) -> Message:
    """The reply of a policy whose model cannot read the context: no reply, saying why, for the
    caller to score as the failure it is."""
    return Message(
        role="assistant",
        content=f"[context of {context_tokens} tokens exceeds the model's {window}-token window]",
    )
