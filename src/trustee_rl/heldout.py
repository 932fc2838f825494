"""Held-out scoring of a policy's first replies, by rules alone (no simulator calls).

Cheap enough to run before and after every training stage on a CPU, on tasks frozen in the run
store before training, from catalog domains never trained on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from trustee_rl.policy.base import Conversation, Policy
from trustee_rl.schema import HeldoutOutcome, HeldoutScores, Message, Task
from trustee_rl.sim.rules import leaf_score
from trustee_rl.sim.tools import call_error
from trustee_rl.stats import (
    Interval,
    McNemar,
    PairedBootstrap,
    bootstrap_interval,
    format_p,
    mcnemar,
    paired_bootstrap,
    wilson_interval,
)

CHUNK = 16
# Kinds of call problems, by what `call_error`'s message says (jsonschema's wording for arguments).
_PROBLEM_KINDS = (
    ("no call", "no call"),
    ("could not parse", "unparsable call"),
    ("unknown tool", "unknown tool"),
    ("is not of type", "argument of the wrong type"),
    ("is a required property", "missing argument"),
    ("Additional properties", "unexpected argument"),
    ("is not one of", "value outside the enum"),
)
# The rates of HeldoutScores: pass/fail per task, and the one graded per task.
PASS_FAIL = ("any_call", "valid_call", "right_tool")
GRADED = ("argument_accuracy",)
RATES = PASS_FAIL + GRADED


def opening(task: Task) -> list[Message]:
    """What the policy reads first: the system prompt and the user's opening message."""
    return [
        Message(role="system", content=task.system_prompt),
        Message(role="user", content=task.initial_message),
    ]


async def score_first_replies(
    policy: Policy, tasks: list[Task], progress: Callable[[int], None] | None = None
) -> HeldoutScores:
    """Greedy first replies to `tasks`, graded by their first call; `progress` hears the count of
    tasks done."""
    # Chunks of similar length: a batch is padded to its longest prompt.
    order = sorted(range(len(tasks)), key=lambda i: prompt_size(tasks[i]))
    replies: dict[int, Message] = {}
    for start in range(0, len(order), CHUNK):
        chunk = order[start : start + CHUNK]
        answers = await policy.act([Conversation(opening(tasks[i]), tasks[i].tools) for i in chunk])
        replies.update(zip(chunk, answers, strict=True))
        if progress is not None:
            progress(len(replies))
    return first_reply_scores(tasks, [replies[i] for i in range(len(tasks))])


def prompt_size(task: Task) -> int:
    return (
        len(task.system_prompt)
        + len(task.initial_message)
        + sum(len(tool.model_dump_json()) for tool in task.tools)
    )


def first_reply_scores(tasks: list[Task], replies: list[Message]) -> HeldoutScores:
    """Each first reply graded by its first call alone (what a policy stopped where that call
    closes would have written): a move, not everything the reply goes on to say."""
    outcomes = []
    for task, reply in zip(tasks, replies, strict=True):
        call = reply.tool_calls[0] if reply.tool_calls else None
        problem = "no call" if call is None else call_error(call, task)
        valid = problem is None
        if not task.expected_calls:  # no offered tool fits: declining is the right move
            outcomes.append(
                HeldoutOutcome(
                    task_id=task.id,
                    any_call=call is not None,
                    valid_call=valid,
                    right_tool=call is None,
                    argument_accuracy=float(call is None),
                    call_problem=problem,
                )
            )
            continue
        # The expected call the first call means to make: the one of its name, else the first.
        expected = next(
            (e for e in task.expected_calls if call is not None and e.name == call.name),
            task.expected_calls[0],
        )
        outcomes.append(
            HeldoutOutcome(
                task_id=task.id,
                any_call=call is not None,
                valid_call=valid,
                right_tool=call is not None and call.name == expected.name,
                argument_accuracy=leaf_score(expected, call) if call is not None else 0.0,
                call_problem=problem,
            )
        )
    return scores_of(outcomes)


def scores_of(outcomes: list[HeldoutOutcome]) -> HeldoutScores:
    """The rates over graded first replies."""
    count = max(len(outcomes), 1)
    return HeldoutScores(
        tasks=len(outcomes),
        per_task=outcomes,
        **{name: sum(float(getattr(o, name)) for o in outcomes) / count for name in RATES},
    )


def problem_counts(scores: HeldoutScores) -> dict[str, int]:
    """How many first replies fail to make a valid call, by kind of failure (most first)."""
    kinds: dict[str, int] = {}
    for outcome in scores.per_task:
        if outcome.call_problem is not None:
            label = next(
                (kind for words, kind in _PROBLEM_KINDS if words in outcome.call_problem),
                "other invalid arguments",
            )
            kinds[label] = kinds.get(label, 0) + 1
    return dict(sorted(kinds.items(), key=lambda item: -item[1]))


def score_intervals(scores: HeldoutScores) -> dict[str, Interval]:
    """Each rate's interval: Wilson for the pass/fail rates, from the rate and the task count (so
    records kept before per-task outcomes were stored have them too); a bootstrap over tasks for
    argument accuracy, where the per-task outcomes are stored."""
    if scores.tasks == 0:
        return {}
    intervals = {
        name: wilson_interval(getattr(scores, name) * scores.tasks, scores.tasks)
        for name in PASS_FAIL
    }
    if scores.per_task:
        for name in GRADED:
            intervals[name] = bootstrap_interval([getattr(o, name) for o in scores.per_task])
    return intervals


@dataclass(frozen=True)
class StageTests:
    """Each rate of one stage against an earlier one, on the held-out tasks both graded."""

    paired: int
    tests: dict[str, McNemar | PairedBootstrap]


def stage_tests(before: HeldoutScores, after: HeldoutScores) -> StageTests | None:
    """McNemar's exact test for the pass/fail rates, a paired bootstrap for argument accuracy;
    None where either stage lacks per-task outcomes or they share no task."""
    earlier = {o.task_id: o for o in before.per_task}
    common = [o for o in after.per_task if o.task_id in earlier]
    if not common:
        return None
    tests: dict[str, McNemar | PairedBootstrap] = {}
    for name in PASS_FAIL:
        tests[name] = mcnemar(
            [getattr(earlier[o.task_id], name) for o in common], [getattr(o, name) for o in common]
        )
    for name in GRADED:
        tests[name] = paired_bootstrap(
            [getattr(earlier[o.task_id], name) for o in common], [getattr(o, name) for o in common]
        )
    return StageTests(len(common), tests)


def format_interval(interval: Interval) -> str:
    """A rate's interval in percent, as every table of stage scores shows it."""
    return f"[{100 * interval.low:.1f}, {100 * interval.high:.1f}]"


def format_test(test: McNemar | PairedBootstrap) -> str:
    """A stage-to-stage test in a few characters: p, and what it rests on."""
    p = format_p(test.p)
    if isinstance(test, McNemar):
        return f"{p} (+{test.c}/−{test.b})"
    return f"{p} (Δ{100 * test.difference:+.1f} pts)"


def format_scores(scores: HeldoutScores) -> str:
    """Each rate with its 95 % interval in brackets (Wilson; a bootstrap for argument accuracy)."""
    intervals = score_intervals(scores)
    rates = (
        f"{name.replace('_', ' ')} {getattr(scores, name):.1%}"
        + (f" {format_interval(intervals[name])}" if name in intervals else "")
        for name in RATES
    )
    problems = ", ".join(f"{kind} {count}" for kind, count in problem_counts(scores).items())
    return (
        ", ".join(rates)
        + f" ({scores.tasks} tasks)"
        + (f"; no valid call: {problems}" if problems else "")
    )
