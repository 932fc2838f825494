"""Warm-start demonstrations: built from the environment's own tasks, judged like episodes, and
tokenised so that only the agent's turns are trained on."""

from __future__ import annotations

import random

from trustee_rl.curriculum import CurriculumConfig
from trustee_rl.policy.factory import open_transformers_policy
from trustee_rl.runner import HELDOUT, SpreadTaskSource
from trustee_rl.schema import Task
from trustee_rl.sim.taskgen import TaskGenConfig
from trustee_rl.train.config import WarmStartConfig
from trustee_rl.train.warmstart import (
    Demonstration,
    collect_demonstrations,
    demonstration,
    judged,
    tokenize_demonstration,
)

from .test_taskgen import difficulty, environment

TEMPLATES = TaskGenConfig(request_writer="template")


async def task_at(answerable: bool = True, ambiguity: str = "clear", calls: int = 1) -> Task:
    async with environment(TEMPLATES) as env:
        return await env.task(difficulty(3, calls, ambiguity, answerable), 11, [])


async def test_a_demonstration_asks_for_held_back_facts_then_calls_and_reports() -> None:
    task = await task_at(ambiguity="highly", calls=2)
    assert task.private_facts
    turns = demonstration(task, random.Random(0))
    roles = [m.role for m in turns]
    assert roles == ["assistant", "user", "assistant", "tool", "tool", "assistant"]
    asked = turns[0].content or ""
    assert all(key.replace("_", " ").split(".")[-1] in asked for key in task.private_facts)
    assert all(value in (turns[1].content or "") for value in task.private_facts.values())
    assert [(c.name, c.arguments) for c in turns[2].tool_calls] == [
        (e.name, e.arguments) for e in task.expected_calls
    ]
    assert turns[-1].content and not turns[-1].tool_calls
    assert await judged(Demonstration(task, turns))


async def test_a_demonstration_declines_when_no_offered_tool_fits() -> None:
    task = await task_at(answerable=False)
    turns = demonstration(task, random.Random(0))
    assert [m.role for m in turns] == ["assistant"] and not turns[0].tool_calls
    assert await judged(Demonstration(task, turns))


async def test_the_judge_rejects_a_demonstration_with_a_wrong_value() -> None:
    task = await task_at()
    turns = demonstration(task, random.Random(0))
    [call] = turns[0].tool_calls
    key = next(iter(call.arguments))
    wrong = call.model_copy(update={"arguments": {**call.arguments, key: "something else"}})
    turns[0] = turns[0].model_copy(update={"tool_calls": [wrong]})
    assert not await judged(Demonstration(task, turns))


async def test_harvest_spans_levels_and_kinds_without_simulator_calls() -> None:
    config = WarmStartConfig(demos=48, max_attempts=64, max_level=60)
    async with environment(TEMPLATES) as env:
        harvest = await collect_demonstrations(env, config, CurriculumConfig(), seed=3)
    assert len(harvest.demos) == 48 and harvest.rejected == 0 and harvest.sim_calls == []
    tasks = [demo.task for demo in harvest.demos]
    assert any(not task.expected_calls for task in tasks)  # declining
    assert any(task.private_facts for task in tasks)  # asking
    assert any(task.distractors and task.expected_calls for task in tasks)  # choosing
    assert any(len(task.expected_calls) > 1 for task in tasks)  # several calls
    assert any(task.system_prompt == "" for task in tasks)  # tools alone, as benchmarks open


async def test_only_the_agent_turns_are_trained_on() -> None:
    task = await task_at(ambiguity="highly")
    demo = Demonstration(task, demonstration(task, random.Random(0)))
    policy = open_transformers_policy("embedded", max_new_tokens=8)
    example = tokenize_demonstration(demo, policy.tokenizer, policy.chat_format)
    ids, mask = example["input_ids"], example["assistant_masks"]
    assert len(ids) == len(mask)
    trained = policy.tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m])
    agent = [m for m in demo.turns if m.role == "assistant"]
    expected = "".join(
        policy.chat_format.reply_text(m) + policy.chat_format.end_of_turn for m in agent
    )
    assert trained == expected
    # The user's answer and the tool results are context, never targets.
    environment_text = [m.content or "" for m in demo.turns if m.role in ("user", "tool")]
    assert all(text not in trained for text in environment_text if len(text) > 12)


async def test_a_spread_task_set_spans_difficulty_evenly() -> None:
    async with environment(TEMPLATES) as env:
        source = SpreadTaskSource(env, CurriculumConfig(), 5, HELDOUT, max_level=50)
        tasks = await source.draw_many(16)
        again = await source.draw_many(16)
    levels = [task.difficulty.level for task in tasks]
    assert sorted(set(levels)) == [1 + 7 * bucket for bucket in range(8)]
    assert levels[:8] == levels[8:] == sorted(levels[:8])  # index i sits in bucket i % 8
    assert [t.model_dump() for t in tasks] == [t.model_dump() for t in again]
