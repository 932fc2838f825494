"""The one policy seam: the model under training or test, answering several conversations at once.

Every front end talks to a policy through `Policy.act`: `trustee simulate` one episode at a time
(concurrent callers are batched by the backend), the GRPO rollout a whole lockstep batch, every
benchmark its items. `open_policy` (policy/factory.py) builds one from any model spec. This module
imports nothing heavy, so the environment core may depend on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from trustee_rl.schema import Message, Tool


class TokenRecord(Protocol):
    """What the environment core needs of an episode's token ledger (policy/ledger.py): how many
    tokens the policy has spent, to hold the episode to its budget."""

    @property
    def num_policy_tokens(self) -> int: ...


@dataclass
class Conversation:
    """One conversation waiting for the policy's next turn."""

    messages: list[Message]
    tools: list[Tool]
    # Seeds the turn's sampling where the backend takes seeds (greedy decoding ignores it).
    seed: int = 0
    # Which benchmark item and step this is; models ignore it, ground-truth replays look it up.
    key: str = ""
    # A cap on this turn's tokens below the policy's own (an episode's remaining budget).
    max_tokens: int | None = None
    # The episode's token ledger, for a trainable policy to extend with exactly what it sampled.
    ledger: TokenRecord | None = None


class Policy(Protocol):
    # Stable label: episodes record it, results are cached under it, tables are headed by it.
    name: str
    # Whether gradients can flow into it (an in-process model), as opposed to a server or a replay.
    trainable: bool

    async def act(self, conversations: Sequence[Conversation]) -> list[Message]:
        """The next assistant turn of each conversation, in order."""
        ...

    async def aclose(self) -> None: ...
