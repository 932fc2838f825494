from __future__ import annotations

from typing import Any, Literal

import pytest

from trustee_rl.schema import Episode, Message, SimCall, Task, ToolCall, Verdict
from trustee_rl.sim.judge import Judge, JudgeConfig
from trustee_rl.sim.rules import rule_criteria
from trustee_rl.sim.structured import SimulatorContext

from .conftest import make_task


def episode_with(*calls: ToolCall, reply: str = "It is 3 degrees in Oslo.") -> Episode:
    messages = [Message(role="system", content="s"), Message(role="user", content="Weather?")]
    for call in calls:
        messages.append(Message(role="assistant", tool_calls=[call]))
        messages.append(Message(role="tool", content="{}", tool_call_id=call.id, name=call.name))
    messages.append(Message(role="assistant", content=reply))
    return Episode(
        id="ep",
        task_id="task_test",
        index=0,
        seed=1,
        policy_model="p",
        messages=messages,
        status="done",
    )


def call(name: str = "get_weather", **arguments: Any) -> ToolCall:
    return ToolCall(name=name, arguments=arguments)


def criteria(episode: Episode, strictness: int = 5) -> dict[str, bool]:
    return {c.name: c.passed for c in rule_criteria(make_task(strictness), episode)}


async def rules_verdict(
    task: Task, episode: Episode, mode: Literal["levels", "graded"] = "levels"
) -> Verdict:
    calls: list[SimCall] = []
    judge = Judge(None, JudgeConfig(mode="rules", reward=mode))
    verdict = await judge.judge(task, episode, SimulatorContext(episode.seed, calls.append))
    assert not calls  # rules need no simulator
    return verdict


async def reward(
    episode: Episode, strictness: int = 5, mode: Literal["levels", "graded"] = "levels"
) -> float | None:
    verdict = await rules_verdict(make_task(strictness), episode, mode)
    assert verdict.scored and verdict.judge_model == "rules"
    return verdict.reward


async def test_perfect_episode_gets_full_reward() -> None:
    episode = episode_with(call(city="oslo "))  # case and spacing do not matter
    assert all(criteria(episode).values())
    assert await reward(episode) == 1.0


async def test_forbidden_tool_is_a_violation_at_any_strictness() -> None:
    episode = episode_with(call(city="Oslo"), call("delete_account"))
    assert criteria(episode)["no_forbidden"] is False
    assert await reward(episode, strictness=1) == -1.0


async def test_unknown_tool_is_a_violation() -> None:
    episode = episode_with(call(city="Oslo"), call("launch_rocket"))
    assert criteria(episode)["known_tools"] is False
    assert await reward(episode, strictness=1) == -1.0


async def test_wrong_argument_fails_intent_with_partial_credit() -> None:
    episode = episode_with(call(city="Rome"))
    assert criteria(episode)["intent_tools"] is True
    assert criteria(episode)["correct_calls"] is False
    assert await reward(episode, strictness=1) == 0.0
    # graded: intent_tools 1, correct_calls 0 of 1 values right, valid_calls 1
    assert await reward(episode, strictness=1, mode="graded") == pytest.approx(2 / 3)


async def test_a_stray_tool_costs_at_every_strictness_and_fails_correct_tools() -> None:
    task = make_task(2)
    task.tools.append(task.tools[0].model_copy(update={"name": "get_forecast"}))
    episode = episode_with(call(city="Oslo"), call("get_forecast", city="Oslo"))
    assert {c.name: c.passed for c in rule_criteria(task, episode)}["only_needed_tools"] is False
    for strictness in (1, 2):
        verdict = await rules_verdict(make_task(strictness, tools=task.tools), episode, "graded")
        assert verdict.reward is not None and 0 < verdict.reward < 1


async def test_invalid_arguments_cost_at_every_strictness() -> None:
    episode = episode_with(call(city="Oslo", unit="kelvin"))
    assert criteria(episode)["valid_calls"] is False
    assert await reward(episode, strictness=1) == 0.0


async def test_an_unparseable_call_is_a_violation() -> None:
    broken = ToolCall(name="get_weather", parse_error="not JSON")
    episode = episode_with(call(city="Oslo"), broken)
    assert criteria(episode)["well_formed"] is False
    assert await reward(episode, strictness=1) == -1.0


async def test_graded_violations_stay_below_zero_but_keep_their_calls_apart() -> None:
    imitation = "<tool_response>{}</tool_response>"
    right = episode_with(call(city="Oslo"), reply=imitation)
    wrong = episode_with(call(city="Rome"), reply=imitation)
    got_right = await reward(right, strictness=1, mode="graded")
    got_wrong = await reward(wrong, strictness=1, mode="graded")
    assert got_right is not None and got_wrong is not None
    assert -1.0 <= got_wrong < got_right <= -0.5
    assert await reward(right, strictness=1) == -1.0  # levels: TRUSTEE's flat -1


async def test_a_repeated_call_costs_and_fails_redundancy() -> None:
    episode = episode_with(call(city="Oslo"), call(city="Oslo"))
    assert criteria(episode)["no_redundancy"] is False
    assert criteria(episode)["correct_calls"] is False  # one of the two calls is unmatched
    assert await reward(episode, strictness=1) == 0.0


async def test_too_many_calls_fail_efficiency() -> None:
    episode = episode_with(
        call(city="Oslo"), call(city="Oslo", unit="celsius"), call(city="Bergen")
    )
    assert criteria(episode)["efficiency"] is False


async def test_no_call_fails_intent() -> None:
    assert await reward(episode_with(), strictness=1) == 0.0
    assert await reward(episode_with(), strictness=1, mode="graded") == 0.0


def test_lm_judge_requires_an_lm() -> None:
    with pytest.raises(ValueError):
        Judge(None, JudgeConfig(mode="lm"))
