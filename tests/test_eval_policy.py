"""The local policy under evaluation: long conversation openings (tau2's policy and tools) are
computed once, and the replies are those of a full prefill."""

from __future__ import annotations

import asyncio

import pytest

from trustee_rl.policy.base import Conversation
from trustee_rl.policy.factory import open_transformers_policy
from trustee_rl.policy.generate import MIN_CACHED_OPENING
from trustee_rl.policy.transformers import TransformersPolicy
from trustee_rl.schema import Message

from .conftest import WEATHER

MAX_TOKENS = 24


def _full_prefill_reply(policy: TransformersPolicy, conversation: Conversation) -> Message:
    ledger = policy.new_ledger()
    ids = ledger.start(conversation.messages, conversation.tools)
    return ledger.add_policy_turn(policy.generator([ids], MAX_TOKENS)[0])


@pytest.mark.embedded
def test_a_long_opening_is_computed_once_and_replies_match_a_full_prefill() -> None:
    policy = open_transformers_policy("embedded", max_new_tokens=MAX_TOKENS)
    rules = " ".join(
        f"Rule {n}: a refund over {10 * n} dollars needs a manager's approval." for n in range(90)
    )
    system = Message(role="system", content=rules)
    questions = ["What is the weather in Paris?", "Can I get a refund of 50 dollars?"]
    long_opening = [
        Conversation([system, Message(role="user", content=question)], [WEATHER])
        for question in questions
    ]
    short_opening = Conversation(
        [Message(role="system", content="Be brief."), Message(role="user", content=questions[0])],
        [WEATHER],
    )

    # Alone, a conversation's long opening is computed once and cached ...
    first = asyncio.run(policy.act([long_opening[0]]))
    assert len(policy.openings) == 1
    # ... and a later batch starts from it (a batch of new openings is prefilled together).
    replies = asyncio.run(policy.act([*long_opening, short_opening]))
    assert len(policy.openings) == 1  # both long conversations share one cached opening
    assert replies[0] == first[0]
    for conversation, reply in zip([*long_opening, short_opening], replies, strict=True):
        assert reply == _full_prefill_reply(policy, conversation)
    assert replies[0].usage.prompt_tokens > MIN_CACHED_OPENING
    assert replies[0] != replies[1]  # the questions differ, and so do the replies


@pytest.mark.embedded
def test_a_prefix_cache_serves_one_context_at_a_time() -> None:
    policy = open_transformers_policy("embedded", max_new_tokens=4)
    ids = policy.new_ledger().start(
        [
            Message(role="system", content="word " * MIN_CACHED_OPENING),
            Message(role="user", content="hi"),
        ],
        [],
    )
    opening = policy.openings.opening(ids)
    assert opening is not None and len(opening) < len(ids)
    with pytest.raises(ValueError, match="batch of one"):
        policy.generator([ids, ids], 4, prefix_cache=policy.openings.copy(opening))
