from __future__ import annotations

import os
from typing import Any

# Tests never reach a model hub: everything they load is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from trustee_rl.schema import (
    Difficulty,
    ExpectedCall,
    ForbiddenRule,
    Provenance,
    RubricItem,
    Task,
    Tool,
)

WEATHER = Tool(
    name="get_weather",
    description="Current weather for a city.",
    parameters={
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 40},
            "unit": {"enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city"],
        "additionalProperties": False,
    },
    returns={
        "type": "object",
        "properties": {
            "temperature": {"type": "number"},
            "summary": {"type": "string", "maxLength": 80},
        },
        "required": ["temperature", "summary"],
        "additionalProperties": False,
    },
)
DELETE = Tool(
    name="delete_account",
    description="Delete the user's account.",
    parameters={"type": "object", "properties": {}, "additionalProperties": False},
)


def make_task(strictness: int = 5, **overrides: Any) -> Task:
    values: dict[str, Any] = dict(
        id="task_test",
        domain="weather",
        tools=[WEATHER, DELETE],
        distractors=["delete_account"],
        system_prompt="You are a weather assistant.",
        persona="expert",
        initial_message="What's the weather?",
        private_facts={"city": "Oslo"},
        goal="Learn the weather in Oslo.",
        expected_calls=[ExpectedCall(name="get_weather", arguments={"city": "Oslo"})],
        forbidden=[ForbiddenRule(tool="delete_account", description="Never delete accounts.")],
        rubric=[RubricItem(id="report", description="Tells the user the weather.")],
        difficulty=Difficulty(
            level=50,
            num_tools=2,
            num_calls=1,
            num_turns=1,
            prompt_specificity="brief",
            persona="expert",
            ambiguity="somewhat",
            strictness=strictness,
        ),
        seed=1,
        provenance=Provenance(simulator_model="test"),
    )
    values.update(overrides)
    return Task(**values)


@pytest.fixture
def task() -> Task:
    return make_task()
