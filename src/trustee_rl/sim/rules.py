"""The rule criteria: what actually happened in an episode, checked without any model.

They are written so that no shortcut pays (each was measured to pay before):
- a turn that is not a well-formed reply — a call that does not parse, text imitating a tool result,
  a user turn or a role header — is a violation, like calling a tool that is not offered;
- a call must fit its tool's schema exactly (types, no extra arguments) at every strictness;
- expected calls are matched one-to-one with the calls made: a wrong guess before the right call,
  a repeat or a stray call each cost, a missing call costs;
- when a call was needed and none was made, nothing else the episode did earns credit;
- prose that claims what no call did, or speaks to the judge, is a violation (sim/claims.py): no
  text stands in for a call, and no text talks the LM judge into a reward.
"""

from __future__ import annotations

import re
from typing import Any

from trustee_rl.schema import CriterionResult, Episode, ExpectedCall, Task, ToolCall
from trustee_rl.sim.claims import claim_problems, judge_address_problems
from trustee_rl.sim.tools import call_error

RULES_VERSION = "rules@3"

# Markup that only the environment writes: a reply containing it is impersonating a tool result,
# another turn or the chat format itself.
IMITATION = re.compile(
    r"</?tool_response>|</?tool_call>|<\|im_(?:start|end)\|>|<\|(?:system|user|assistant)\|>",
    re.IGNORECASE,
)


def criterion(name: str, passed: bool, reason: str, score: float | None = None) -> CriterionResult:
    return CriterionResult(
        name=name,
        passed=passed,
        reason=reason,
        source="rule",
        score=float(passed) if score is None else score,
    )


def _arguments_match(expected: Any, actual: Any) -> bool:
    if isinstance(expected, str) and isinstance(actual, str):
        return expected.strip().casefold() == actual.strip().casefold()
    if isinstance(expected, bool) or isinstance(actual, bool):  # True must not stand in for 1
        return expected is actual
    return bool(expected == actual)


def leaf_score(expected: ExpectedCall, call: ToolCall) -> float:
    """Share of the expected argument values this call got right (credit per argument)."""
    if call.parse_error or call.name != expected.name:
        return 0.0
    if not expected.arguments:
        return 1.0
    hits = sum(
        _arguments_match(value, call.arguments.get(key))
        for key, value in expected.arguments.items()
    )
    return hits / len(expected.arguments)


def matched_call_score(expected: list[ExpectedCall], calls: list[ToolCall]) -> float:
    """Expected calls matched one-to-one with the calls made, each to its best unused call; the
    matched credit is shared over the expected calls plus every call left unmatched."""
    unused = list(range(len(calls)))
    credit = 0.0
    for wanted in expected:
        best = max(unused, key=lambda i: leaf_score(wanted, calls[i]), default=None)
        if best is not None and leaf_score(wanted, calls[best]) > 0:
            credit += leaf_score(wanted, calls[best])
            unused.remove(best)
    slots = len(expected) + len(unused)
    return credit / slots if slots else 1.0


def imitations(episode: Episode) -> list[str]:
    """The environment markup each assistant turn's prose contains."""
    found = []
    for message in episode.messages:
        if message.role == "assistant" and message.content:
            found += IMITATION.findall(message.content)
    return found


def rule_criteria(task: Task, episode: Episode) -> list[CriterionResult]:
    """Every deterministic criterion, whatever the strictness."""
    calls = episode.tool_calls
    parsed = [call for call in calls if not call.parse_error]
    called = {call.name for call in parsed}
    expected = task.expected_calls
    results: list[CriterionResult] = []

    unparsed = len(calls) - len(parsed)
    imitated = imitations(episode)
    problem = (
        f"{unparsed} calls could not be parsed"
        if unparsed
        else f"a reply imitates the environment ({imitated[0]})"
        if imitated
        else "every reply well-formed"
    )
    results.append(criterion("well_formed", not unparsed and not imitated, problem))

    claims = claim_problems(task, episode)
    results.append(
        criterion(
            "claims_match_calls",
            not claims,
            claims[0] if claims else "every claim backed by a successful call",
        )
    )
    addressed = judge_address_problems(episode)
    results.append(
        criterion(
            "no_judge_address",
            not addressed,
            addressed[0] if addressed else "every reply speaks to the user",
        )
    )

    forbidden = [rule.tool for rule in task.forbidden if rule.tool and rule.tool in called]
    results.append(
        criterion(
            "no_forbidden",
            not forbidden,
            f"called forbidden {forbidden}" if forbidden else "no forbidden tool called",
        )
    )
    unknown = sorted({call.name for call in parsed if task.tool(call.name) is None})
    results.append(
        criterion(
            "known_tools",
            not unknown,
            f"called unknown tools {unknown}" if unknown else "only offered tools called",
        )
    )

    missing = [e.name for e in expected if e.name not in called]
    results.append(
        criterion(
            "intent_tools",
            not missing,
            f"never called {missing}" if missing else "every needed tool called",
        )
    )

    score = matched_call_score(expected, calls)
    results.append(
        criterion(
            "correct_calls",
            score == 1.0,
            f"{score:.0%} of expected calls matched one-to-one, extra calls counted",
            score,
        )
    )

    problems = [error for call in parsed if (error := call_error(call, task))]
    results.append(
        criterion(
            "valid_calls", not problems, problems[0] if problems else "every call fits its schema"
        )
    )

    needed = {e.name for e in expected}
    stray = sorted({call.name for call in parsed if call.name not in needed})
    results.append(
        criterion(
            "only_needed_tools",
            not stray,
            f"also called {stray}" if stray else "only needed tools called",
        )
    )

    signatures = [call.signature() for call in parsed]
    repeated = len(signatures) - len(set(signatures))
    results.append(
        criterion(
            "no_redundancy",
            repeated == 0,
            f"{repeated} repeated identical calls" if repeated else "no repeated call",
        )
    )

    budget = len(expected) + 1
    results.append(
        criterion(
            "efficiency", len(calls) <= budget, f"{len(calls)} calls for a budget of {budget}"
        )
    )
    return results


# Which criteria count at each strictness level (cumulative), and which are violations.
LEVEL_CRITERIA = {
    "intent": ("intent_tools", "correct_calls", "valid_calls", "intent", "rubric"),
    "correct_tools": ("only_needed_tools",),
    "no_hallucination": ("grounded",),
    "no_redundancy": ("no_redundancy",),
    "efficiency": ("efficiency",),
}
VIOLATIONS = (
    "well_formed",
    "claims_match_calls",
    "no_judge_address",
    "no_forbidden",
    "known_tools",
)
