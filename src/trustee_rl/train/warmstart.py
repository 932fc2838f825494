"""Warm start: supervised demonstrations that the simulated environment produces itself.

The simulator model writes the first call for a task under a JSON-schema grammar (so the call is
well-formed by construction); a demonstration is kept only when the rule judge accepts it: every
expected argument right, schema-valid, an offered tool. The policy then learns the tool-call format
from these with TRL's SFTTrainer, before RL (SPEC: cold start).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustee_rl.curriculum import Curriculum, CurriculumConfig
from trustee_rl.environment import Environment
from trustee_rl.heldout import opening
from trustee_rl.lm.hermes import tools_system_prompt
from trustee_rl.policy.chat import ChatFormat
from trustee_rl.policy.ledger import TokenLedger
from trustee_rl.runner import DEMONSTRATION, TaskSource
from trustee_rl.schema import Message, SimCall, Task, ToolCall
from trustee_rl.seeding import derive_seed
from trustee_rl.sim.prompts import load_prompt
from trustee_rl.sim.rules import leaf_score
from trustee_rl.sim.structured import SimulatorContext, SimulatorError, ask_json
from trustee_rl.sim.tools import call_error
from trustee_rl.train.config import WarmStartConfig

DEMONSTRATION_PROMPT = load_prompt("demonstration")


@dataclass
class Demonstration:
    task: Task
    call: ToolCall


@dataclass
class Harvest:
    """What collecting demonstrations yielded and cost."""

    demos: list[Demonstration]
    tasks_tried: int
    # Every simulator call made to write first calls, rejected ones included.
    sim_calls: list[SimCall]


def call_schema(task: Task) -> dict[str, Any]:
    """One call to any offered tool, with that tool's own argument schema."""
    return {
        "anyOf": [
            {
                "type": "object",
                "properties": {"name": {"const": tool.name}, "arguments": tool.parameters},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for tool in task.tools
        ]
    }


def accepted(task: Task, call: ToolCall) -> bool:
    expected = task.expected_calls[0]
    return call_error(call, task) is None and leaf_score(expected, call) == 1.0


async def collect_demonstrations(
    environment: Environment, config: WarmStartConfig, level: float, seed: int
) -> Harvest:
    curriculum = Curriculum(CurriculumConfig(initial_level=level, mode="fixed"))
    source = TaskSource(environment, curriculum, seed, DEMONSTRATION)
    demos: list[Demonstration] = []
    calls: list[SimCall] = []
    tried = 0
    while len(demos) < config.demos and tried < config.max_attempts:
        tried += 1
        task = (await source.draw(tried)).task
        if task is None:
            continue
        context = SimulatorContext(derive_seed(seed, "demo-call", tried), calls.append)
        try:
            value = await ask_json(
                environment.simulator,
                context,
                role="demonstration",
                prompt=DEMONSTRATION_PROMPT,
                # The agent's own view of the task: its system prompt with the tools, the request.
                messages=DEMONSTRATION_PROMPT.render(
                    system=tools_system_prompt(task.system_prompt, task.tools),
                    request=task.initial_message,
                ),
                schema=call_schema(task),
                seed_labels=(),
                max_tokens=192,
                temperature=0.7,
            )
        except SimulatorError:
            continue
        call = ToolCall(id="call_1_0", name=value["name"], arguments=value["arguments"])
        if accepted(task, call):
            demos.append(Demonstration(task, call))
    return Harvest(demos, tried, calls)


def tokenize_demonstration(
    demo: Demonstration, tokenizer: Any, chat_format: ChatFormat
) -> dict[str, list[int]]:
    """input_ids with assistant_masks = 1 exactly on the policy's reply, built by the same ledger
    as RL rollouts, so the warm start trains the tokens RL will sample."""
    ledger = TokenLedger(tokenizer, chat_format)
    ledger.start(opening(demo.task), demo.task.tools)
    ledger.add_policy_turn(chat_format.reply_ids(Message(role="assistant", tool_calls=[demo.call])))
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
) -> dict[str, float]:
    """TRL's SFTTrainer over pre-tokenised examples; loss only where assistant_masks is 1.
    `bf16` must be explicit: TRL turns bf16 autocast on by default, many times slower on CPUs
    without native bf16."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    arguments = SFTConfig(
        output_dir=str(out_dir),
        num_train_epochs=config.epochs,
        learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=not has_cuda(),
        bf16=bf16,
        gradient_checkpointing=gradient_checkpointing,
        seed=seed,
        disable_tqdm=True,
        max_length=None,
    )
    trainer = SFTTrainer(
        model=model,
        args=arguments,
        train_dataset=Dataset.from_list(examples),
        processing_class=tokenizer,
    )
    result = trainer.train()
    return {
        "warm_start_loss": float(result.training_loss),
        "warm_start_steps": float(result.global_step),
    }


def has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())
