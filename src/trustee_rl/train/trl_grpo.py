"""GRPO in simulated environments with TRL: the engine behind `trustee train`.

Stages, each recorded in the run dir so a killed run resumes where it stopped:
  held-out tasks (frozen) -> base scores -> warm start (optional) -> its scores -> GRPO -> final scores.
TRL does the optimisation; our rollout function plays GRPO groups through the environment core.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trustee_rl.curriculum import Curriculum, CurriculumState
from trustee_rl.environment import Environment
from trustee_rl.evaluate.simbench import (
    FirstTurnScores,
    first_turn_scores,
    freeze_tasks,
    load_tasks,
    save_tasks,
)
from trustee_rl.lm import open_lm
from trustee_rl.lm.cache import CachedLM
from trustee_rl.policy.chat import ChatFormat, chat_format_for
from trustee_rl.policy.ledger import TokenLedger
from trustee_rl.policy.model import load_policy, save_policy
from trustee_rl.schema import Message
from trustee_rl.sim.catalog import load_catalog
from trustee_rl.sim.structured import SimulatorError
from trustee_rl.store import RunStore
from trustee_rl.train.config import TrainConfig, TrainingRefused
from trustee_rl.train.rollout import Generator, GroupRollout, GroupStats, Trajectory, group_rewards
from trustee_rl.train.warmstart import (
    collect_demonstrations,
    has_cuda,
    supervised_pass,
    tokenize_demonstration,
)

RESUME_KEYS = (
    "seed",
    "policy",
    "simulator",
    "catalog",
    "steps",
    "tasks_per_step",
    "group_size",
    "curriculum",
    "judge",
    "taskgen",
    "warm_start",
    "eval",
)
STAGES_FILE = "stages.json"
TASK_RETRIES = 3
PROBE_STEPS = 2

Reporter = Callable[[str], None]


class Training:
    def __init__(self, config: TrainConfig, run_dir: Path, report: Reporter = print) -> None:
        self.config = config
        self.run_dir = run_dir
        self.report = report
        self.loop = asyncio.new_event_loop()
        catalog = load_catalog(Path(config.catalog) if config.catalog else None)
        self.train_catalog, self.heldout_catalog = catalog.split(
            config.eval.holdout_fraction, config.seed
        )
        self.simulator = CachedLM(open_lm(config.simulator, config.simulator_model))
        self.environment = Environment(
            self.simulator, self.train_catalog, config.judge, config.taskgen
        )
        self.store, self.resumed = RunStore.open_or_create(
            run_dir, config.model_dump(mode="json"), resume_keys=RESUME_KEYS
        )
        self.stages: dict[str, Any] = self._read_stages()

    # -- stage bookkeeping -------------------------------------------------------------------
    def _read_stages(self) -> dict[str, Any]:
        path = self.run_dir / STAGES_FILE
        return json.loads(path.read_text()) if path.exists() else {}

    def _write_stages(self) -> None:
        temporary = self.run_dir / (STAGES_FILE + ".tmp")
        temporary.write_text(json.dumps(self.stages, indent=2))
        temporary.replace(self.run_dir / STAGES_FILE)

    def write_metrics_jsonl(self) -> None:
        """metrics.jsonl mirrors the store, so steps replayed after a resume appear once."""
        rows: dict[int, dict[str, float | None]] = {}
        for step, name, value in self.store.metrics():
            rows.setdefault(step, {})[name] = (
                None if math.isnan(value) else value
            )  # JSON has no NaN
        lines = [json.dumps({"step": step, **values}) for step, values in sorted(rows.items())]
        temporary = self.run_dir / "metrics.jsonl.tmp"
        temporary.write_text("".join(line + "\n" for line in lines))
        temporary.replace(self.run_dir / "metrics.jsonl")

    def run(self) -> dict[str, Any]:
        try:
            return self._run()
        finally:
            self.loop.run_until_complete(self.simulator.aclose())
            self.loop.close()
            self.store.close()

    def _run(self) -> dict[str, Any]:
        config = self.config
        heldout = self._heldout_tasks()
        model, tokenizer = load_policy(config.policy)
        chat_format = chat_format_for(config.chat_format, tokenizer)
        generator = Generator(
            model,
            tokenizer.pad_token_id or tokenizer.eos_token_id,
            chat_format.stop_ids,
            config.temperature,
        )
        if "base" not in self.stages:
            self._score("base", heldout, model, tokenizer, chat_format)
        warm_dir = self.run_dir / "warm_start"
        if config.warm_start.enabled:
            if "warm_start" not in self.stages:
                self._warm_start(model, tokenizer, chat_format, warm_dir)
                self._score("warm_start", heldout, model, tokenizer, chat_format)
            elif not self._grpo_checkpoints():
                model, tokenizer = load_policy(str(warm_dir))
                generator.model = model
        self._grpo(model, tokenizer, chat_format, generator)
        final_dir = self.run_dir / "final"
        save_policy(model, tokenizer, final_dir)
        self._score("grpo", heldout, model, tokenizer, chat_format)
        return self.stages

    # -- held-out evaluation -----------------------------------------------------------------
    def _heldout_tasks(self) -> list[Any]:
        path = self.run_dir / "heldout_tasks.jsonl"
        if path.exists():
            return load_tasks(path)
        if self.config.eval.tasks == 0:
            return []
        self.report(
            f"freezing {self.config.eval.tasks} held-out tasks from {len(self.heldout_catalog.domains)} unseen domains"
        )
        environment = Environment(
            self.simulator, self.heldout_catalog, self.config.judge, self.config.taskgen
        )
        tasks = self.loop.run_until_complete(
            freeze_tasks(
                environment,
                self.config.eval.tasks,
                self.config.eval.seed,
                self.config.curriculum.initial_level,
            )
        )
        save_tasks(path, tasks)
        return tasks

    def _score(
        self, stage: str, tasks: list[Any], model: Any, tokenizer: Any, chat_format: ChatFormat
    ) -> None:
        if not tasks:
            return
        started = time.perf_counter()
        greedy = Generator(
            model,
            tokenizer.pad_token_id or tokenizer.eos_token_id,
            chat_format.stop_ids,
            temperature=0.0,
        )
        replies: list[Message] = []
        for start in range(0, len(tasks), 16):
            chunk = tasks[start : start + 16]
            ledgers = [TokenLedger(tokenizer, chat_format) for _ in chunk]
            contexts = [
                ledger.start(
                    [
                        Message(role="system", content=t.system_prompt),
                        Message(role="user", content=t.initial_message),
                    ],
                    t.tools,
                )
                for ledger, t in zip(ledgers, chunk, strict=True)
            ]
            outputs = greedy(contexts, self.config.max_turn_tokens)
            replies += [
                ledger.add_policy_turn(ids) for ledger, ids in zip(ledgers, outputs, strict=True)
            ]
        scores = first_turn_scores(tasks, replies)
        self.stages[stage] = scores.as_dict() | {"wall_s": round(time.perf_counter() - started, 1)}
        self._write_stages()
        self.report(f"held-out {stage}: " + _format_scores(scores))

    # -- warm start --------------------------------------------------------------------------
    def _warm_start(
        self, model: Any, tokenizer: Any, chat_format: ChatFormat, out_dir: Path
    ) -> None:
        config = self.config.warm_start
        started = time.perf_counter()
        demos, tried = self.loop.run_until_complete(
            collect_demonstrations(
                self.environment, config, self.config.curriculum.initial_level, self.config.seed
            )
        )
        if not demos:
            raise TrainingRefused(
                f"warm start: the simulator produced no accepted demonstration in {tried} tasks"
            )
        self.report(
            f"warm start: {len(demos)} demonstrations accepted of {tried} tasks; supervised pass"
        )
        examples = [tokenize_demonstration(demo, tokenizer, chat_format) for demo in demos]
        result = supervised_pass(
            model,
            tokenizer,
            examples,
            config,
            self.run_dir / "warm_start_trainer",
            self.config.seed,
            bf16=self.config.bf16,
            gradient_checkpointing=self.config.gradient_checkpointing,
        )
        save_policy(model, tokenizer, out_dir)
        self.stages["warm_start_training"] = result | {
            "demos": len(demos),
            "tasks_tried": tried,
            "wall_s": round(time.perf_counter() - started, 1),
        }
        self._write_stages()

    # -- GRPO --------------------------------------------------------------------------------
    def _grpo_checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first. A kill while one is written leaves a directory
        without trainer_state.json (TRL writes it last); such a checkpoint is not resumed from."""
        folder = self.run_dir / "checkpoints"
        found = folder.glob("checkpoint-*/trainer_state.json") if folder.exists() else []
        return sorted((path.parent for path in found), key=lambda p: int(p.name.split("-")[1]))

    def _grpo(
        self, model: Any, tokenizer: Any, chat_format: ChatFormat, generator: Generator
    ) -> None:
        from datasets import Dataset
        from trl import GRPOConfig, GRPOTrainer

        config = self.config
        per_step = config.tasks_per_step * config.group_size
        checkpoints = self._grpo_checkpoints()
        resume_step = int(checkpoints[-1].name.split("-")[1]) if checkpoints else 0
        # Steps after the last checkpoint are replayed by TRL; their records are replaced, not duplicated.
        self.store.rewind(first_episode=resume_step * per_step, first_step=resume_step)
        states = dict(self.store.curriculum_states())
        curriculum = Curriculum(
            config.curriculum,
            CurriculumState.model_validate(states[resume_step - 1]) if resume_step else None,
        )
        rollout = GroupRollout(
            self.environment,
            curriculum,
            generator,
            tokenizer,
            chat_format,
            seed=config.seed,
            group_size=config.group_size,
            max_turn_tokens=config.max_turn_tokens,
            max_episode_tokens=config.max_episode_tokens,
            policy_model=config.policy,
        )
        recorder = StepRecorder(self, rollout, curriculum)
        arguments = GRPOConfig(
            output_dir=str(self.run_dir / "checkpoints"),
            learning_rate=config.learning_rate,
            lr_scheduler_type="constant",
            beta=config.kl_beta,
            epsilon=config.clip_epsilon,
            num_generations=config.group_size,
            per_device_train_batch_size=config.micro_batch_size,
            gradient_accumulation_steps=per_step // config.micro_batch_size,
            max_steps=config.steps,
            save_steps=config.checkpoint_every,
            save_only_model=False,
            logging_steps=1,
            report_to=["tensorboard"],
            seed=config.seed,
            use_cpu=not has_cuda(),
            bf16=config.bf16,
            gradient_checkpointing=config.gradient_checkpointing,
            max_completion_length=config.max_episode_tokens * 4,
            temperature=config.temperature,
            disable_tqdm=True,
            use_vllm=config.use_vllm,
        )
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(self.run_dir / "tensorboard"))
        slots = [{"prompt": f"slot-{i}"} for i in range(config.steps * config.tasks_per_step)]
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=[simulated_reward],
            args=arguments,
            train_dataset=Dataset.from_list(slots),
            processing_class=tokenizer,
            rollout_func=recorder,
            callbacks=[recorder.callback()],
        )
        generator.model = trainer.model
        trainer.train(resume_from_checkpoint=str(checkpoints[-1]) if checkpoints else None)


def simulated_reward(
    prompts: list[Any], completions: list[Any], reward: list[float], **_: Any
) -> list[float]:
    """The judge's reward, computed during the rollout and forwarded by TRL."""
    return reward


class StepRecorder:
    """TRL's rollout function: plays one step's groups, stores them, moves the curriculum."""

    def __init__(self, training: Training, rollout: GroupRollout, curriculum: Curriculum) -> None:
        self.training = training
        self.rollout = rollout
        self.curriculum = curriculum
        self.step_started = time.perf_counter()
        self.pending: dict[str, float] = {}
        # Groups of the first PROBE_STEPS rollouts, to refuse a run that has no reward signal.
        self.probe = GroupStats()
        self.rollouts = 0

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, Any]:
        config = self.training.config
        step = int(trainer.state.global_step)
        self.step_started = time.perf_counter()
        slots = _slots(prompts, config.group_size)
        stats = GroupStats()
        trajectories = self.training.loop.run_until_complete(self._play(step, len(slots), stats))
        rewards = group_rewards(trajectories, config.group_size, stats)
        self.rollouts += 1
        self.probe.groups += stats.groups
        self.probe.zero_variance += stats.zero_variance
        informative = self.probe.groups - self.probe.zero_variance
        if (
            self.rollouts == PROBE_STEPS
            and informative < config.min_informative_groups * self.probe.groups
        ):
            raise TrainingRefused(
                f"{self.probe.zero_variance} of the first {self.probe.groups} groups have identical rewards: "
                "GRPO would get no signal. Enable the warm start, raise temperature or group_size, "
                "or lower the starting difficulty."
            )
        self._record(step, trajectories, stats)
        order = _expand(slots, config.group_size)
        return {
            "prompt_ids": [trajectories[i].prompt_ids for i in order],
            "completion_ids": [trajectories[i].completion_ids for i in order],
            "logprobs": None,
            "env_mask": [trajectories[i].env_mask for i in order],
            "reward": [rewards[i] for i in order],
        }

    async def _play(self, step: int, groups: int, stats: GroupStats) -> list[Trajectory]:
        tasks = []
        for slot in range(groups):
            for attempt in range(TASK_RETRIES):
                try:
                    tasks.append(await self.rollout.make_task(step, slot + attempt * groups, []))
                    break
                except SimulatorError:
                    stats.task_failures += 1
            else:
                raise SimulatorError(
                    f"step {step}: the simulator failed to write a task {TASK_RETRIES} times"
                )
        per_step = self.training.config.tasks_per_step * self.training.config.group_size
        return await self.rollout.run(tasks, step * per_step, stats)

    def _record(self, step: int, trajectories: list[Trajectory], stats: GroupStats) -> None:
        store = self.training.store
        scored = [t.reward for t in trajectories if t.reward is not None]
        for trajectory in trajectories:
            store.save_task(trajectory.task)
            store.save_episode(trajectory.episode, trajectory.verdict)
            if trajectory.reward is not None:
                self.curriculum.record(
                    trajectory.task.difficulty, trajectory.reward, trajectory.reward >= 1.0
                )
        level = self.curriculum.level
        self.curriculum.update(scored)
        store.save_curriculum(step, self.curriculum.state.model_dump())
        calls = [call for t in trajectories for call in t.episode.tool_calls]
        self.pending = {
            "reward_mean": sum(scored) / len(scored) if scored else math.nan,
            "difficulty": level,
            "scored": float(len(scored)),
            "zero_variance_groups": float(stats.zero_variance),
            "tool_calls_per_episode": len(calls) / max(len(trajectories), 1),
            "valid_call_share": sum(c.parse_error is None for c in calls) / max(len(calls), 1),
            **stats.timings,
        }

    def callback(self) -> Any:
        from transformers import TrainerCallback

        recorder = self

        class _Callback(TrainerCallback):
            def on_log(
                self,
                args: Any,
                state: Any,
                control: Any,
                logs: dict[str, Any] | None = None,
                **_: Any,
            ) -> None:
                if not logs or "loss" not in logs:
                    return
                step = int(state.global_step) - 1
                values = dict(recorder.pending)
                values["step_time_s"] = time.perf_counter() - recorder.step_started
                for key in ("loss", "kl", "grad_norm", "learning_rate"):
                    if isinstance(logs.get(key), (int, float)):
                        values[key] = float(logs[key])
                recorder.training.store.log_metrics(step, values)
                recorder.training.write_metrics_jsonl()
                recorder.training.report(
                    f"step {step + 1}/{recorder.training.config.steps}  reward {values['reward_mean']:+.3f}  "
                    f"D {values['difficulty']:.0f}  {values['step_time_s']:.1f}s"
                )

        return _Callback()


def _slots(prompts: list[Any], group_size: int) -> list[tuple[int, int]]:
    """(first position, count) of each run of identical prompts; TRL repeats a prompt per group member."""
    runs: list[tuple[int, int]] = []
    for position, prompt in enumerate(prompts):
        if runs and prompts[runs[-1][0]] == prompt and runs[-1][1] < group_size:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((position, 1))
    return runs


def _expand(slots: list[tuple[int, int]], group_size: int) -> list[int]:
    """Which trajectory answers each prompt position: a run of `group_size` copies takes the whole
    group; a single prompt expects `group_size` completions."""
    order: list[int] = []
    for slot, (_, count) in enumerate(slots):
        order += [
            slot * group_size + member for member in range(group_size if count == 1 else count)
        ]
    return order


def _format_scores(scores: FirstTurnScores) -> str:
    return (
        f"any call {scores.any_call:.1%}, valid call {scores.valid_call:.1%}, "
        f"right tool {scores.right_tool:.1%}, argument accuracy {scores.argument_accuracy:.1%} ({scores.tasks} tasks)"
    )
