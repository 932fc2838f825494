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
from trustee_rl.seeding import derive_rng
from trustee_rl.sim import templates
from trustee_rl.sim.catalog import Catalog, Domain, example_arguments
from trustee_rl.sim.coherence import request_problem
from trustee_rl.sim.prompts import load_prompt
from trustee_rl.sim.structured import SimulatorContext, ask_json

WITHHELD_SHARE = {"clear": 0.0, "somewhat": 1 / 3, "highly": 2 / 3}


class TaskGenConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    argument_source: Literal["catalog", "simulator"] = Field(
        default="catalog",
        description="where expected-call argument values come from: the catalog's examples "
        "(robust with a small simulator) or the simulator itself (more varied)",
    )
    request_writer: Literal["simulator", "template"] = Field(
        default="simulator",
        description="who writes the goal and first message: the simulator (varied; needs a model "
        "that writes coherently) or templates built from the tool descriptions (coherent by "
        "construction, no simulator call)",
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
        """A task drawn from `seed`; every simulator call made for it goes to `log`."""
        context = SimulatorContext(seed, log.append)
        rng = derive_rng(seed, "taskgen")
        domain = rng.choice(self.catalog.domains)
        targets = _pick_targets(domain, difficulty.num_calls, rng)
        if difficulty.answerable:
            distractors = await self._distractors(
                domain, targets, difficulty.num_tools - len(targets), rng, context
            )
        else:
            distractors = _unrelated_tools(self.catalog, domain, targets, difficulty.num_tools, rng)
        wanted = [
            await self._expected_call(tool, domain, index, context)
            for index, tool in enumerate(targets)
        ]
        facts = _flatten_arguments(wanted)
        withheld = _withheld_keys(facts, difficulty, rng) if difficulty.answerable else []
        stated = {key: value for key, value in facts.items() if key not in withheld}
        tools = [*targets, *distractors] if difficulty.answerable else list(distractors)
        rng.shuffle(tools)
        versions: dict[str, str] = {}
        writing: dict[str, Any]
        if self.config.request_writer == "template":  # states every fact by construction
            writing = templates.request(
                [tool.description for tool in targets], stated, derive_rng(seed, "request")
            ) | {"rubric": []}
            versions["templates"] = templates.TEMPLATES.tag
        else:
            writing = await self._write_request(
                domain, difficulty, targets, stated, withheld, tools, context
            )
            writing["initial_message"] = _with_stated_facts(writing["initial_message"], stated)
        agent = load_prompt("agent_system")
        forbidden = [
            ForbiddenRule(tool=tool.name, description=agent.text("forbidden_rule", tool=tool.name))
            for tool in distractors[: 1 if difficulty.answerable else 0]
        ]
        system_prompt = agent.text(
            difficulty.prompt_specificity,
            domain_title=_title(domain.name),
            domain_description=domain.description,
        )
        if forbidden:
            rules = agent.text("rules", rules=" ".join(rule.description for rule in forbidden))
            system_prompt += " " + rules
        rubric = (
            _rubric(withheld, writing["rubric"])
            if difficulty.answerable
            else [RubricItem(id="decline", description=templates.TEMPLATES.text("decline_rubric"))]
        )
        return Task(
            id=f"task_{seed:08x}",
            domain=domain.name,
            tools=tools,
            distractors=[tool.name for tool in distractors],
            system_prompt=system_prompt,
            persona=difficulty.persona,
            initial_message=writing["initial_message"],
            private_facts={key: facts[key] for key in withheld},
            goal=writing["goal"],
            expected_calls=wanted if difficulty.answerable else [],
            forbidden=forbidden,
            rubric=rubric,
            difficulty=difficulty,
            seed=seed,
            provenance=Provenance(
                simulator_model=self.lm.model,
                prompt_versions={call.role: call.prompt_version for call in log}
                | {"agent_system": agent.tag}
                | versions,
                source="catalog",
            ),
        )

    async def _distractors(
        self,
        domain: Domain,
        targets: list[Tool],
        wanted: int,
        rng: random.Random,
        context: SimulatorContext,
    ) -> list[Tool]:
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
            chosen[-1] = await self._invent_tool(domain, [*targets, *chosen[:-1]], context)
        return chosen

    async def _invent_tool(
        self, domain: Domain, existing: list[Tool], context: SimulatorContext
    ) -> Tool:
        prompt = load_prompt("invent_tool")
        taken = {tool.name for tool in existing}

        def check(value: dict[str, Any]) -> str | None:
            if value["name"] in taken:
                return prompt.text("name_taken_complaint", name=value["name"])
            return None

        value = await ask_json(
            self.lm,
            context,
            role="taskgen",
            prompt=prompt,
            messages=prompt.render(
                domain_title=_title(domain.name), existing=", ".join(sorted(taken))
            ),
            schema=INVENTED_TOOL_SCHEMA,
            seed_labels=("invent",),
            check=check,
        )
        return _invented_tool(value)

    async def _expected_call(
        self, tool: Tool, domain: Domain, index: int, context: SimulatorContext
    ) -> ExpectedCall:
        if self.config.argument_source == "catalog":
            rng = derive_rng(context.seed, "args", index)
            return ExpectedCall(name=tool.name, arguments=example_arguments(tool, rng))
        prompt = load_prompt("arguments")
        arguments = await ask_json(
            self.lm,
            context,
            role="taskgen",
            prompt=prompt,
            messages=prompt.render(
                domain_title=_title(domain.name),
                tool_name=tool.name,
                tool_description=tool.description,
            ),
            schema=tool.parameters,
            seed_labels=("args", index),
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
        context: SimulatorContext,
    ) -> dict[str, Any]:
        prompt = load_prompt("taskgen")
        tool_names = {tool.name for tool in tools}
        messages = prompt.render(
            domain_title=_title(domain.name),
            persona=difficulty.persona,
            persona_style=load_prompt("persona_style").text(difficulty.persona),
            steps="\n".join(f"{i}. {tool.description}" for i, tool in enumerate(targets, 1)),
            stated="\n".join(f"- {key}: {value}" for key, value in stated.items()) or "- (none)",
            withheld=", ".join(withheld) or "(none)",
            ambiguity_style=load_prompt("ambiguity_style").text(difficulty.ambiguity),
        )

        def check(value: dict[str, Any]) -> str | None:
            named = [name for name in tool_names if name in value["initial_message"]]
            if named:
                return prompt.text("names_functions_complaint", names=named)
            problem = request_problem(value["goal"], value["initial_message"])
            if problem:
                return prompt.text("incoherent_complaint", reason=problem)
            return None

        result: dict[str, Any] = await ask_json(
            self.lm,
            context,
            role="taskgen",
            prompt=prompt,
            messages=messages,
            schema=REQUEST_SCHEMA,
            seed_labels=("request",),
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


def _unrelated_tools(
    catalog: Catalog, domain: Domain, targets: list[Tool], count: int, rng: random.Random
) -> list[Tool]:
    """Tools for a request none of them fits: from other domains, so that declining is right
    beyond doubt; a one-domain catalog offers its own other tools."""
    pool = [tool for other in catalog.domains if other.name != domain.name for tool in other.tools]
    if not pool:
        pool = [tool for tool in domain.tools if tool not in targets]
    return rng.sample(pool, min(count, len(pool)))


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
    prompt = load_prompt("taskgen")
    items = [
        RubricItem(id=f"ask_{i}", description=prompt.text("ask_rubric", detail=_title(key)))
        for i, key in enumerate(withheld, 1)
    ]
    items.append(RubricItem(id="report", description=prompt.text("report_rubric")))
    items += [RubricItem(id=f"extra_{i}", description=text) for i, text in enumerate(written, 1)]
    return items


def _title(name: str) -> str:
    return name.replace("_", " ")
