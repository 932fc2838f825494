"""Task generation over the shipped catalog, with a loopback simulator writing the language."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jsonschema
import pytest

from trustee_rl.environment import Environment
from trustee_rl.lm.openai_http import OpenAIHTTPLM
from trustee_rl.schema import Difficulty, SimCall
from trustee_rl.sim.catalog import load_catalog
from trustee_rl.sim.taskgen import TaskGenConfig
from trustee_rl.testing.openai_server import LoopbackOpenAIServer, Reply, SchemaResponder


def difficulty(
    num_tools: int, num_calls: int, ambiguity: str = "somewhat", answerable: bool = True
) -> Difficulty:
    return Difficulty.model_validate(
        {
            "answerable": answerable,
            "level": 50,
            "num_tools": num_tools,
            "num_calls": num_calls,
            "num_turns": 1,
            "prompt_specificity": "detailed",
            "persona": "beginner",
            "ambiguity": ambiguity,
            "strictness": 5,
        }
    )


class InventingResponder:
    """Writes like SchemaResponder; asked to invent a tool, first offers a taken name."""

    def __init__(self) -> None:
        self.schema = SchemaResponder()
        self.offered_taken = False

    def __call__(self, request: dict[str, Any]) -> Reply:
        prompt = request["messages"][1]["content"]
        if not prompt.startswith("Invent one more function"):
            return self.schema(request)
        taken = prompt.split("different from these: ", 1)[1].split(".", 1)[0].split(", ")
        name = "check_loyalty_points" if self.offered_taken else taken[0]
        self.offered_taken = True
        parameter = {
            "name": "member_id",
            "type": "string",
            "description": "Member",
            "required": True,
        }
        tool = {"name": name, "description": "Check a member's points.", "parameters": [parameter]}
        return Reply(content=json.dumps(tool))


@asynccontextmanager
async def environment(
    config: TaskGenConfig | None = None, responder: Any = None
) -> AsyncIterator[Environment]:
    with LoopbackOpenAIServer(responder or SchemaResponder()) as server:
        lm = OpenAIHTTPLM(server.base_url, model="sim", structured_output="json_schema")
        try:
            yield Environment(lm, load_catalog(None), taskgen=config)
        finally:
            await lm.aclose()


@pytest.mark.parametrize("source", ["catalog", "simulator"])
async def test_expected_calls_fit_the_offered_tools_among_distractors(source: str) -> None:
    async with environment(TaskGenConfig.model_validate({"argument_source": source})) as env:
        task = await env.task(difficulty(num_tools=5, num_calls=2), 5, [])
    offered = {tool.name: tool for tool in task.tools}
    assert len(offered) == 5 and len(task.expected_calls) == 2
    for call in task.expected_calls:
        jsonschema.validate(call.arguments, offered[call.name].parameters)
    needed = {call.name for call in task.expected_calls}
    assert len(task.distractors) == 3 and set(task.distractors) == offered.keys() - needed
    [rule] = task.forbidden
    assert rule.tool in task.distractors
    assert task.system_prompt.endswith(f" Rules: {rule.description}")
    assert rule.description == (
        f"Do not call {rule.tool}: it is not needed for this request and must not be used."
    )


async def test_a_difficulty_without_spare_tools_offers_no_distractors() -> None:
    async with environment() as env:
        task = await env.task(difficulty(num_tools=2, num_calls=2), 5, [])
    assert task.distractors == [] and task.forbidden == []
    assert {tool.name for tool in task.tools} == {call.name for call in task.expected_calls}
    assert "Rules:" not in task.system_prompt


async def test_the_same_seed_gives_the_same_task_and_the_same_calls() -> None:
    logs: list[list[SimCall]] = [[], [], []]
    async with environment() as env:
        first = await env.task(difficulty(4, 2), 5, logs[0])
        again = await env.task(difficulty(4, 2), 5, logs[1])
        other = await env.task(difficulty(4, 2), 6, logs[2])
    assert again == first
    assert [c.messages for c in logs[1]] == [c.messages for c in logs[0]]
    assert other.model_dump(exclude={"id", "seed"}) != first.model_dump(exclude={"id", "seed"})


async def test_withheld_details_become_private_facts_the_agent_must_ask_for() -> None:
    log: list[SimCall] = []
    async with environment() as env:
        task = await env.task(difficulty(3, 2, ambiguity="highly"), 8, log)
    assert task.private_facts
    asks = [item.description for item in task.rubric if item.id.startswith("ask_")]
    assert asks == [
        f"The assistant asks the user for the {key.replace('_', ' ')}."
        for key in task.private_facts
    ]
    assert [call.role for call in log] == ["taskgen"]
    assert task.provenance.prompt_versions == {
        "taskgen": "taskgen@2",
        "agent_system": "agent_system@1",
    }


async def test_an_invented_distractor_must_have_a_new_name() -> None:
    log: list[SimCall] = []
    config = TaskGenConfig(invent_tools=1.0)
    async with environment(config, InventingResponder()) as env:
        task = await env.task(difficulty(4, 1), 5, log)
    assert task.distractors[-1] == "check_loyalty_points"
    invented = task.tool("check_loyalty_points")
    assert invented is not None and invented.parameters["required"] == ["member_id"]
    assert log[0].error is not None and log[0].error.endswith(" is taken")
    assert log[1].error is None


async def test_a_task_no_offered_tool_fits_expects_no_call_and_offers_only_unrelated_tools() -> (
    None
):
    async with environment() as env:
        task = await env.task(difficulty(3, 1, ambiguity="highly", answerable=False), 5, [])
        fitting = await env.task(difficulty(3, 1, ambiguity="highly"), 5, [])
    assert task.expected_calls == [] and task.private_facts == {} and task.forbidden == []
    # The request is the one the answerable twin makes, but none of its tools is on offer: the
    # offered tools all come from other domains.
    [needed] = fitting.expected_calls
    assert needed.name not in {tool.name for tool in task.tools}
    domain_tools = {tool.name for tool in load_catalog(None).domain(task.domain).tools}
    assert len(task.tools) == 3 and not domain_tools & {tool.name for tool in task.tools}
    assert [item.id for item in task.rubric] == ["decline"]


async def test_template_requests_state_every_fact_without_a_simulator_call() -> None:
    log: list[SimCall] = []
    config = TaskGenConfig(request_writer="template")
    async with environment(config) as env:
        tasks = [await env.task(difficulty(3, 2, "clear"), seed, log) for seed in range(20)]
    assert log == []  # catalog arguments and templates: the simulator is not asked
    for task in tasks:
        assert task.provenance.prompt_versions["templates"] == "templates@1"
        assert task.goal.startswith("The user wants the assistant to ")
        for call in task.expected_calls:
            for value in call.arguments.values():
                if isinstance(value, dict):
                    continue
                for item in value if isinstance(value, list) else [value]:
                    shown = item if isinstance(item, str) else json.dumps(item)
                    assert shown in task.initial_message
        # No placeholder and no function name: the request is the tool's description in words.
        assert "[" not in task.initial_message and "$" not in task.initial_message
        assert not any(tool.name in task.initial_message for tool in task.tools)
    assert len({task.initial_message.split(" ")[0] for task in tasks}) > 3  # varied wording
