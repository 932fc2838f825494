"""Held-out scoring of a policy's first replies, by rules alone (no simulator calls).

Cheap enough to run before and after every training stage on a CPU, on tasks frozen in the run
store before training, from catalog domains never trained on.
"""

from __future__ import annotations

from trustee_rl.policy.base import Conversation, Policy
from trustee_rl.schema import HeldoutScores, Message, Task
from trustee_rl.sim.rules import leaf_score
from trustee_rl.sim.tools import call_error

CHUNK = 16


def opening(task: Task) -> list[Message]:
    """What the policy reads first: the system prompt and the user's opening message."""
    return [
        Message(role="system", content=task.system_prompt),
        Message(role="user", content=task.initial_message),
    ]


async def score_first_replies(policy: Policy, tasks: list[Task]) -> HeldoutScores:
    replies: list[Message] = []
    for start in range(0, len(tasks), CHUNK):
        chunk = tasks[start : start + CHUNK]
        replies += await policy.act([Conversation(opening(task), task.tools) for task in chunk])
    return first_reply_scores(tasks, replies)


def first_reply_scores(tasks: list[Task], replies: list[Message]) -> HeldoutScores:
    any_call = valid = right = 0
    accuracy = 0.0
    for task, reply in zip(tasks, replies, strict=True):
        calls = reply.tool_calls
        if not calls:
            continue
        any_call += 1
        valid += all(call_error(call, task) is None for call in calls)
        right += calls[0].name in {expected.name for expected in task.expected_calls}
        first_expected = task.expected_calls[0]
        accuracy += max(leaf_score(first_expected, call) for call in calls)
    n = max(len(tasks), 1)
    return HeldoutScores(
        tasks=len(tasks),
        any_call=any_call / n,
        valid_call=valid / n,
        right_tool=right / n,
        argument_accuracy=accuracy / n,
    )
