"""Task generation: structure from the catalog and the seed, language from the simulator.

Code decides what the curriculum controls exactly (which tools, how many calls, which facts the
user holds back); the simulator writes what needs language (goal, first message, rubric) and,
when asked, argument values and invented distractor tools. Everything is checked before use.
"""

from __future__ import annotations

import json
import random
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from trustee_rl.lm.base import LM
from trustee_rl.schema import (
    Difficulty,
    ExpectedCall,
    ForbiddenRule,
    Provenance,
    RubricItem,
    SimCall,
    Task,
    Tool,
)
from trustee_rl.seeding import derive_rng, derive_seed
from trustee_rl.sim.catalog import Catalog, Domain, example_arguments
from trustee_rl.sim.prompts import AMBIGUITY_STYLE, PERSONA_STYLE, load_prompt
from trustee_rl.sim.structured import ask_json, repetitive

AGENT_PROMPTS_VERSION = "agent_system@1"
AGENT_SYSTEM_PROMPTS = {
    "detailed": (
        "You are a {domain_title} assistant. {domain_description} Use the functions provided to "
        "act for the user. Before calling a function, make sure you have every required detail; "
        "ask the user for anything missing instead of guessing. After acting, tell the user the result."
    ),
    "brief": "You are a {domain_title} assistant. Help the user with the functions provided.",
    "generic": "You are a helpful assistant.",
}
WITHHELD_SHARE = {"clear": 0.0, "somewhat": 1 / 3, "highly": 2 / 3}


class TaskGenConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    argument_source: Literal["catalog", "simulator"] = Field(
        default="catalog",
        description="where expected-call argument values come from: the catalog's examples "
        "(robust with a small simulator) or the simulator itself (more varied)",
    )
    invent_tools: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="chance that one distractor is invented by the simulator",
    )


class TaskGenerator:
    def __init__(self, lm: LM, catalog: Catalog, config: TaskGenConfig | None = None) -> None:
        self.lm = lm
        self.catalog = catalog
        self.config = config or TaskGenConfig()

    async def generate(self, difficulty: Difficulty, seed: int, log: list[SimCall]) -> Task:
        rng = derive_rng(seed, "taskgen")
        domain = rng.choice(self.catalog.domains)
        targets = _pick_targets(domain, difficulty.num_calls, rng)
        distractors = await self._distractors(domain, targets, difficulty.num_tools, rng, seed, log)
        expected = [
            await self._expected_call(tool, domain, seed, index, log)
            for index, tool in enumerate(targets)
        ]
        facts = _flatten_arguments(expected)
        withheld = _withheld_keys(facts, difficulty, rng)
        stated = {key: value for key, value in facts.items() if key not in withheld}
        tools = [*targets, *distractors]
        rng.shuffle(tools)
        writing = await self._write_request(
            domain, difficulty, targets, stated, withheld, tools, seed, log
        )
        forbidden = [
            ForbiddenRule(
                tool=tool.name,
                description=f"Do not call {tool.name}: it is not needed for this request and must not be used.",
            )
            for tool in distractors[:1]
        ]
        title = _title(domain.name)
        system_prompt = AGENT_SYSTEM_PROMPTS[difficulty.prompt_specificity].format(
            domain_title=title, domain_description=domain.description
        )
        if forbidden:
            system_prompt += " Rules: " + " ".join(rule.description for rule in forbidden)
        return Task(
            id=f"task_{seed:08x}",
            domain=domain.name,
            tools=tools,
            distractors=[tool.name for tool in distractors],
            system_prompt=system_prompt,
            persona=difficulty.persona,
            initial_message=_with_stated_facts(writing["initial_message"], stated),
            private_facts={key: facts[key] for key in withheld},
            goal=writing["goal"],
            expected_calls=expected,
            forbidden=forbidden,
            rubric=_rubric(withheld, writing["rubric"]),
            difficulty=difficulty,
            seed=seed,
            provenance=Provenance(
                simulator_model=self.lm.model,
                prompt_versions={call.role: call.prompt_version for call in log}
                | {"agent_system": AGENT_PROMPTS_VERSION},
                source="catalog",
            ),
        )

    async def _distractors(
        self,
        domain: Domain,
        targets: list[Tool],
        num_tools: int,
        rng: random.Random,
        seed: int,
        log: list[SimCall],
    ) -> list[Tool]:
        wanted = num_tools - len(targets)
        used = {tool.name for tool in targets}
        pool = [tool for tool in domain.tools if tool.name not in used]
        rng.shuffle(pool)
        chosen = pool[:wanted]
        others = [
            tool
            for other in self.catalog.domains
            if other.name != domain.name
            for tool in other.tools
        ]
        while len(chosen) < wanted and others:  # small domains borrow from the rest of the catalog
            tool = others.pop(rng.randrange(len(others)))
            if tool.name not in used | {t.name for t in chosen}:
                chosen.append(tool)
        if chosen and rng.random() < self.config.invent_tools:
            chosen[-1] = await self._invent_tool(domain, [*targets, *chosen[:-1]], seed, log)
        return chosen

    async def _invent_tool(
        self, domain: Domain, existing: list[Tool], seed: int, log: list[SimCall]
    ) -> Tool:
        prompt = load_prompt("invent_tool")
        taken = {tool.name for tool in existing}
        value = await ask_json(
            self.lm,
            role="taskgen",
            prompt=prompt,
            messages=prompt.render(
                domain_title=_title(domain.name), existing=", ".join(sorted(taken))
            ),
            schema=INVENTED_TOOL_SCHEMA,
            seed=derive_seed(seed, "invent"),
            log=log,
            check=lambda v: f"name {v['name']} is taken" if v["name"] in taken else None,
        )
        return _invented_tool(value)

    async def _expected_call(
        self, tool: Tool, domain: Domain, seed: int, index: int, log: list[SimCall]
    ) -> ExpectedCall:
        if self.config.argument_source == "catalog":
            return ExpectedCall(
                name=tool.name, arguments=example_arguments(tool, derive_rng(seed, "args", index))
            )
        prompt = load_prompt("arguments")
        arguments = await ask_json(
            self.lm,
            role="taskgen",
            prompt=prompt,
            messages=prompt.render(
                domain_title=_title(domain.name),
                tool_name=tool.name,
                tool_description=tool.description,
            ),
            schema=tool.parameters,
            seed=derive_seed(seed, "args", index),
            log=log,
        )
        return ExpectedCall(name=tool.name, arguments=arguments)

    async def _write_request(
        self,
        domain: Domain,
        difficulty: Difficulty,
        targets: list[Tool],
        stated: dict[str, str],
        withheld: list[str],
        tools: list[Tool],
        seed: int,
        log: list[SimCall],
    ) -> dict[str, Any]:
        prompt = load_prompt("taskgen")
        tool_names = {tool.name for tool in tools}
        messages = prompt.render(
            domain_title=_title(domain.name),
            persona=difficulty.persona,
            persona_style=PERSONA_STYLE[difficulty.persona],
            steps="\n".join(f"{i}. {tool.description}" for i, tool in enumerate(targets, 1)),
            stated="\n".join(f"- {key}: {value}" for key, value in stated.items()) or "- (none)",
            withheld=", ".join(withheld) or "(none)",
            ambiguity_style=AMBIGUITY_STYLE[difficulty.ambiguity],
        )

        def check(value: dict[str, Any]) -> str | None:
            named = [name for name in tool_names if name in value["initial_message"]]
            if named:
                return f"the user message names functions {named}"
            if repetitive(value["initial_message"]) or repetitive(value["goal"]):
                return "the text repeats itself; write it once, plainly"
            return None

        result: dict[str, Any] = await ask_json(
            self.lm,
            role="taskgen",
            prompt=prompt,
            messages=messages,
            schema=REQUEST_SCHEMA,
            seed=derive_seed(seed, "request"),
            log=log,
            check=check,
        )
        return result


REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "goal": {"type": "string", "minLength": 10, "maxLength": 200},
        "initial_message": {"type": "string", "minLength": 10, "maxLength": 300},
        "rubric": {
            "type": "array",
            "items": {"type": "string", "minLength": 5, "maxLength": 120},
            "maxItems": 2,
        },
    },
    "required": ["goal", "initial_message", "rubric"],
    "additionalProperties": False,
}
INVENTED_TOOL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z][a-z0-9_]{2,40}$", "maxLength": 41},
        "description": {"type": "string", "minLength": 10, "maxLength": 160},
        "parameters": {
            "type": "array",
            "minItems": 1,
            "maxItems": 4,
            "items": {
                "type": "object",
                "properties": {
                    "name": {
                        "type": "string",
                        "pattern": "^[a-z][a-z0-9_]{0,30}$",
                        "maxLength": 31,
                    },
                    "type": {"enum": ["string", "integer", "number", "boolean"]},
                    "description": {"type": "string", "maxLength": 100},
                    "required": {"type": "boolean"},
                },
                "required": ["name", "type", "description", "required"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["name", "description", "parameters"],
    "additionalProperties": False,
}


def _invented_tool(value: dict[str, Any]) -> Tool:
    properties: dict[str, Any] = {}
    for param in value["parameters"]:
        spec: dict[str, Any] = {"type": param["type"], "description": param["description"]}
        if param["type"] == "string":
            spec["maxLength"] = 64
        properties[param["name"]] = spec
    required = sorted({p["name"] for p in value["parameters"] if p["required"]})
    return Tool(
        name=value["name"],
        description=value["description"],
        parameters={
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        },
    )


def _pick_targets(domain: Domain, count: int, rng: random.Random) -> list[Tool]:
    tools = list(domain.tools)
    rng.shuffle(tools)
    return tools[: min(count, len(tools))]


def _flatten_arguments(calls: list[ExpectedCall]) -> dict[str, str]:
    """Every argument leaf as `key -> text`; keys are unique across the task's calls."""
    facts: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        else:
            key = prefix
            suffix = 2
            while key in facts:
                key, suffix = f"{prefix} ({suffix})", suffix + 1
            facts[key] = value if isinstance(value, str) else json.dumps(value)

    for call in calls:
        walk("", call.arguments)
    return facts


def _withheld_keys(facts: dict[str, str], difficulty: Difficulty, rng: random.Random) -> list[str]:
    share = WITHHELD_SHARE[difficulty.ambiguity]
    count = min(len(facts), max(1, round(share * len(facts)))) if share and facts else 0
    return sorted(rng.sample(sorted(facts), count))


def _with_stated_facts(message: str, stated: dict[str, str]) -> str:
    """The first message must carry every stated detail; add any the writer left out."""
    missing = {key: value for key, value in stated.items() if value.lower() not in message.lower()}
    if not missing:
        return message
    details = "; ".join(f"{key.replace('_', ' ')}: {value}" for key, value in missing.items())
    return f"{message.rstrip()} ({details})"


def _rubric(withheld: list[str], written: list[str]) -> list[RubricItem]:
    items = [
        RubricItem(
            id=f"ask_{i}",
            description=f"The assistant asks the user for the {key.replace('_', ' ')}.",
        )
        for i, key in enumerate(withheld, 1)
    ]
    items.append(
        RubricItem(
            id="report", description="The assistant tells the user the outcome of what it did."
        )
    )
    items += [RubricItem(id=f"extra_{i}", description=text) for i, text in enumerate(written, 1)]
    return items


def _title(name: str) -> str:
    return name.replace("_", " ")
