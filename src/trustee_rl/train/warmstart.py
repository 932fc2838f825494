"""Warm start: demonstrations built from the simulated environment's own tasks.

A task knows its answer: its expected calls, the facts the user holds back, whether any offered
tool fits at all. A demonstration is the conversation a good agent has on it, its turns written
from templates (`sim/templates.py`): ask for what is missing, call, report the result and stop, or
decline when no tool fits. Each is judged by the rule judge like any episode and kept only when
it succeeds, so the warm start teaches what the reward pays for and nothing else. Tasks are spread
over difficulty levels (distractors, several calls, held-back facts), and no simulator call is made
beyond writing them. TRL's SFTTrainer then trains on the assistant tokens only (SPEC: cold start).
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustee_rl.curriculum import CurriculumConfig
from trustee_rl.environment import Environment
from trustee_rl.heldout import opening
from trustee_rl.policy.chat import ChatFormat
from trustee_rl.policy.ledger import TokenLedger
from trustee_rl.runner import DEMONSTRATION, DrawnTask, SpreadTaskSource
from trustee_rl.schema import Episode, Message, SimCall, Task, ToolCall
from trustee_rl.seeding import derive_rng
from trustee_rl.sim import templates
from trustee_rl.sim.judge import Judge, JudgeConfig
from trustee_rl.sim.structured import SimulatorContext
from trustee_rl.train.config import WarmStartConfig

# Tasks written concurrently (they only wait on the simulator when it writes requests).
CONCURRENT_DRAWS = 16
RULES_JUDGE = Judge(None, JudgeConfig(mode="rules", reward="graded"))


@dataclass
class Demonstration:
    task: Task
    # The conversation after the opening (system prompt and request): agent, user and tool turns.
    turns: list[Message]


@dataclass
class Harvest:
    """What collecting demonstrations yielded and cost."""

    demos: list[Demonstration]
    tasks_tried: int
    # Every simulator call made to write the tasks.
    sim_calls: list[SimCall]
    # Demonstrations the rule judge did not accept (a template that fails its own task).
    rejected: int = 0


def demonstration(task: Task, rng: random.Random) -> list[Message]:
    """The turns a good agent and a cooperative user have on `task`."""
    if not task.expected_calls:
        return [Message(role="assistant", content=templates.decline(rng))]
    turns: list[Message] = []
    if task.private_facts:
        turns.append(
            Message(role="assistant", content=templates.ask(list(task.private_facts), rng))
        )
        turns.append(Message(role="user", content=templates.answer(task.private_facts, rng)))
    calls = [
        ToolCall(id=f"call_{len(turns)}_{i}", name=expected.name, arguments=expected.arguments)
        for i, expected in enumerate(task.expected_calls)
    ]
    turns.append(Message(role="assistant", tool_calls=calls))
    result = templates.TEMPLATES.text("tool_result")
    turns += [
        Message(role="tool", tool_call_id=call.id, name=call.name, content=result) for call in calls
    ]
    turns.append(Message(role="assistant", content=templates.done([c.name for c in calls], rng)))
    return turns


async def judged(demo: Demonstration) -> bool:
    episode = Episode(
        id=f"demo_{demo.task.id}",
        task_id=demo.task.id,
        index=0,
        seed=demo.task.seed,
        policy_model="demonstration",
        messages=[*opening(demo.task), *demo.turns],
        status="done",
    )
    verdict = await RULES_JUDGE.judge(
        demo.task, episode, SimulatorContext(demo.task.seed, lambda call: None)
    )
    return verdict.succeeded


async def collect_demonstrations(
    environment: Environment, config: WarmStartConfig, curriculum: CurriculumConfig, seed: int
) -> Harvest:
    """Up to `config.demos` accepted demonstrations over `config.max_attempts` tasks at most,
    spread over difficulty levels 1..`config.max_level`; the training curriculum's other settings
    (the share of tasks no tool fits, say) hold."""
    source = SpreadTaskSource(environment, curriculum, seed, DEMONSTRATION, config.max_level)
    harvest = Harvest([], 0, [])
    while len(harvest.demos) < config.demos and harvest.tasks_tried < config.max_attempts:
        keys = range(
            harvest.tasks_tried,
            min(harvest.tasks_tried + CONCURRENT_DRAWS, config.max_attempts),
        )
        drawn: list[DrawnTask] = await asyncio.gather(*(source.draw(key) for key in keys))
        for key, attempt in zip(keys, drawn, strict=True):
            if len(harvest.demos) >= config.demos:
                break  # drawn concurrently, but not needed: not counted as tried
            harvest.tasks_tried += 1
            harvest.sim_calls += attempt.calls
            if attempt.task is None:
                continue
            task = _maybe_without_system_prompt(attempt.task, derive_rng(seed, "demo-turns", key))
            demo = Demonstration(task, demonstration(task, derive_rng(seed, "demo-turns", key)))
            if await judged(demo):
                harvest.demos.append(demo)
            else:
                harvest.rejected += 1
    return harvest


def _maybe_without_system_prompt(task: Task, rng: random.Random) -> Task:
    """A third of the demonstrations open with the tools alone, as most benchmarks do; a task whose
    rules live in its system prompt keeps it."""
    if task.forbidden or rng.random() >= 1 / 3:
        return task
    return task.model_copy(update={"system_prompt": ""})


def tokenize_demonstration(
    demo: Demonstration, tokenizer: Any, chat_format: ChatFormat
) -> dict[str, list[int]]:
    """input_ids with assistant_masks = 1 exactly on the agent's turns, built by the same ledger as
    RL rollouts, so the warm start trains the tokens RL will sample."""
    ledger = TokenLedger(tokenizer, chat_format)
    ledger.start(opening(demo.task), demo.task.tools)
    ledger.add_written(demo.turns)
    return {
        "input_ids": ledger.prompt_ids + ledger.completion_ids,
        "assistant_masks": [0] * len(ledger.prompt_ids) + ledger.completion_mask,
    }


def supervised_pass(
    model: Any,
    tokenizer: Any,
    examples: list[dict[str, list[int]]],
    config: WarmStartConfig,
    out_dir: Path,
    seed: int,
    bf16: bool,
    gradient_checkpointing: bool,
    budget_s: float | None = None,
) -> dict[str, float]:
    """TRL's SFTTrainer over pre-tokenised examples; loss only where assistant_masks is 1.
    `bf16` must be explicit: TRL turns bf16 autocast on by default, many times slower on CPUs
    without native bf16. With `budget_s`, training stops at the first step past that many
    seconds (the control arm's equal-compute budget)."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    started = time.perf_counter()
    micro = config.micro_batch_size or config.batch_size

    class _Budget(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            if budget_s is not None and time.perf_counter() - started >= budget_s:
                control.should_training_stop = True

    defaults: dict[str, Any] = {
        "lr_scheduler_type": "constant",
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "disable_tqdm": True,
        "max_length": None,
    }
    # What trustee's settings decide: the keys of SFT_SET_BY_TRUSTEE, which `trl:` may not set.
    decided = {
        "output_dir": str(out_dir),
        "num_train_epochs": config.epochs,
        "learning_rate": config.learning_rate,
        "per_device_train_batch_size": micro,
        "gradient_accumulation_steps": config.batch_size // micro,
        "use_cpu": not has_cuda(),
        "bf16": bf16,
        "gradient_checkpointing": gradient_checkpointing,
        "seed": seed,
    }
    arguments = SFTConfig(**defaults | config.trl | decided)
    trainer = SFTTrainer(
        model=model,
        args=arguments,
        train_dataset=Dataset.from_list(examples),
        processing_class=tokenizer,
        callbacks=[_Budget()],
    )
    result = trainer.train()
    # A trainer is full of reference cycles: collected now, its optimiser state and batches are
    # not still held while GRPO runs.
    del trainer
    gc.collect()
    return {
        "warm_start_loss": float(result.training_loss),
        "warm_start_steps": float(result.global_step),
    }


def has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())
