"""The last two stages: the simulator plays the task as the agent K times through the episode runner
(solve), then writes the rubric from those attempts and decides, in a boolean field, whether the
task is kept (rubric). The kept task is a `Task` record like any other."""

from __future__ import annotations

from typing import Any

from trustee_rl.episode import EpisodeEnv
from trustee_rl.lm.base import LM
from trustee_rl.policy.base import Policy
from trustee_rl.runner import run_episode
from trustee_rl.schema import (
    STRICTNESS_LEVELS,
    Difficulty,
    ExpectedCall,
    ForbiddenRule,
    Provenance,
    RubricItem,
    SimCall,
    Task,
    Tool,
    Usage,
)
from trustee_rl.seeding import derive_seed
from trustee_rl.sim.judge import TRANSCRIPT_END, TRANSCRIPT_START, Judge, JudgeConfig
from trustee_rl.sim.judge import quoted_transcript as judged_transcript
from trustee_rl.sim.prompts import load_prompt
from trustee_rl.sim.structured import SimulatorContext, SimulatorError, ask_json
from trustee_rl.synth.ecosystem import title
from trustee_rl.synth.records import Attempts, Plan, Request, StageOutcome, Toolset
from trustee_rl.synth.reward import rubric_items

# Synthesized tasks have several calls and facts held back: the curriculum's hardest level.
SYNTH_LEVEL = 100.0
# Judged on intent, the tools it needs and grounded answers: a workflow may repeat a lookup, so
# redundancy and efficiency are not held against it.
SYNTH_STRICTNESS = STRICTNESS_LEVELS.index("no_hallucination") + 1
MAX_CALLS, MAX_TURNS = 3, 2
_CHECK = {"type": "string", "minLength": 10, "maxLength": 200}
STAGE_PROMPTS = (
    "synth_ecosystem",
    "synth_distractors",
    "synth_repair",
    "synth_toolcheck",
    "synth_request",
    "synth_rubric",
    "agent_system",
)


def prompt_versions() -> dict[str, str]:
    return {name: load_prompt(name).tag for name in STAGE_PROMPTS}


def build_task(
    plan: Plan,
    toolset: Toolset,
    request: Request,
    *,
    seed: int,
    model: str,
    rubric: list[RubricItem] | None = None,
) -> Task:
    """The task the stages describe; the solve stage plays it before it has a rubric."""
    agent = load_prompt("agent_system")
    system_prompt = agent.text(
        "detailed", domain_title=title(plan.domain), domain_description=plan.description
    )
    system_prompt += " " + agent.text("rules", rules=plan.restriction.rule)
    # The checked workflow: steps whose tool the agent can do itself have no tool.
    needed = list(dict.fromkeys(step.tool for step in toolset.workflow if step.tool is not None))
    facts = request.private_facts
    return Task(
        id=f"synth_{seed:08x}",
        domain=plan.domain,
        tools=[Tool.model_validate(spec.model_dump()) for spec in toolset.tools],
        distractors=toolset.distractors,
        system_prompt=system_prompt,
        persona=plan.persona.expertise,
        initial_message=request.request,
        private_facts=facts,
        goal=plan.goal,
        expected_calls=[ExpectedCall(name=name) for name in needed],
        # A restriction forbids a use of a tool, not the tool: the rubric's policy checks judge it.
        forbidden=[ForbiddenRule(description=plan.restriction.rule)],
        rubric=rubric or [],
        difficulty=Difficulty(
            level=SYNTH_LEVEL,
            num_tools=min(len(toolset.tools), 10),
            num_calls=min(len(needed), MAX_CALLS),
            num_turns=min(max(len(facts), 1), MAX_TURNS),
            prompt_specificity="detailed",
            persona=plan.persona.expertise,
            ambiguity="highly" if facts else "clear",
            strictness=SYNTH_STRICTNESS,
        ),
        seed=seed,
        provenance=Provenance(
            simulator_model=model, prompt_versions=prompt_versions(), source="synthesized"
        ),
    )


async def solve(lm: LM, policy: Policy, task: Task, attempts: int, seed: int) -> StageOutcome:
    """`attempts` episodes of the simulator as the agent, with the core's user and tool
    simulators; judged by rules only (the rubric does not exist yet)."""
    judge = Judge(None, JudgeConfig(mode="rules"))
    episodes = []
    for index in range(attempts):
        env = EpisodeEnv(
            task,
            simulator=lm,
            judge=judge,
            index=index,
            seed=derive_seed(seed, "solve", index),
            policy_model=policy.name,
        )
        episode, _ = await run_episode(env, policy)
        episodes.append(episode)
    calls = [call for episode in episodes for call in episode.sim_calls]
    agent_usage = Usage()
    for episode in episodes:
        for message in episode.messages:
            if message.role == "assistant":
                agent_usage = agent_usage + message.usage
    finished = [episode for episode in episodes if episode.status == "done"]
    if not finished:
        detail = episodes[0].end_reason or "failed"
        outcome = StageOutcome.dropped("no_attempt_finished", detail, calls)
        outcome.agent_usage = agent_usage
        return outcome
    # The calls are stored beside the value; the rubric needs only the conversations.
    played = [episode.model_copy(update={"sim_calls": []}) for episode in episodes]
    return StageOutcome(Attempts(episodes=played), calls, agent_usage=agent_usage)


def _rubric_schema(attempts: int, facts: int) -> dict[str, Any]:
    def checks(low: int, high: int) -> dict[str, Any]:
        return {"type": "array", "minItems": low, "maxItems": high, "items": _CHECK}

    verdict = {
        "type": "object",
        "properties": {"solved": {"type": "boolean"}, "violated": {"type": "boolean"}},
        "required": ["solved", "violated"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {
            "policy": checks(1, 2),
            "subgoals": checks(2, 6),
            "interaction": checks(0, max(facts, 1)),
            "attempts": {
                "type": "array",
                "minItems": attempts,
                "maxItems": attempts,
                "items": verdict,
            },
            "keep": {"type": "boolean"},
            "reason": _CHECK,
        },
        "required": ["policy", "subgoals", "interaction", "attempts", "keep", "reason"],
        "additionalProperties": False,
    }


async def write_rubric(
    lm: LM, plan: Plan, task: Task, attempts: Attempts, seed: int
) -> StageOutcome:
    """The rubric grounded in the attempts; the task is kept only when the teacher's `keep` is
    true, and `keep` is accepted only beside an attempt marked solved without a violation."""
    calls: list[SimCall] = []
    prompt = load_prompt("synth_rubric")
    count = len(attempts.episodes)
    facts = task.private_facts

    def check(value: dict[str, Any]) -> str | None:
        if len(value["attempts"]) != count:
            return prompt.text("attempts_count_complaint", count=count)
        clean = [a["solved"] and not a["violated"] for a in value["attempts"]]
        if value["keep"] and not any(clean):
            return prompt.text("keep_unsolved_complaint")
        if facts and not value["interaction"]:
            return prompt.text("interaction_missing_complaint", facts=", ".join(facts))
        return None

    quoted = "\n\n".join(
        prompt.text(
            "attempt",
            number=number,
            start=TRANSCRIPT_START,
            end=TRANSCRIPT_END,
            transcript=judged_transcript(episode),
        )
        for number, episode in enumerate(attempts.episodes, start=1)
    )
    messages = prompt.render(
        goal=task.goal,
        request=task.initial_message,
        facts="; ".join(f"{key}: {value}" for key, value in facts.items()) or "(none)",
        policy=plan.restriction.rule,
        workflow="\n".join(f"{n}. {s.action}" for n, s in enumerate(plan.workflow, start=1)),
        count=count,
        start=TRANSCRIPT_START,
        end=TRANSCRIPT_END,
        attempts=quoted,
    )
    try:
        value = await ask_json(
            lm,
            SimulatorContext(seed, calls.append),
            role="taskgen",
            prompt=prompt,
            messages=messages,
            schema=_rubric_schema(count, len(facts)),
            seed_labels=("synth", "rubric"),
            check=check,
            temperature=0.0,
            max_tokens=700,
        )
    except SimulatorError as error:
        return StageOutcome.dropped("simulator_failed", str(error), calls)
    if not value["keep"]:
        return StageOutcome.dropped("teacher_discarded", value["reason"], calls)
    rubric = [
        *rubric_items("policy", value["policy"]),
        *rubric_items("subgoal", value["subgoals"]),
        *rubric_items("interaction", value["interaction"]),
    ]
    return StageOutcome(task.model_copy(update={"rubric": rubric}), calls)
