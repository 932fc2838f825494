"""GRPO in simulated environments with TRL: the engine behind `trustee train`.

Stages, each recorded in the run store so a killed run resumes where it stopped:
  held-out tasks (frozen) -> base scores -> warm start (optional) -> its scores -> GRPO -> final scores.
TRL does the optimisation; the runner plays GRPO groups through the environment core.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from trustee_rl.curriculum import Curriculum, CurriculumState
from trustee_rl.environment import Environment
from trustee_rl.heldout import format_scores, score_first_replies
from trustee_rl.lm import open_lm
from trustee_rl.lm.cache import CachedLM
from trustee_rl.policy.chat import ChatTemplateMismatch
from trustee_rl.policy.factory import policy_label
from trustee_rl.policy.model import load_policy, save_policy
from trustee_rl.policy.transformers import TransformersPolicy
from trustee_rl.runner import (
    HELDOUT,
    TRAINING,
    EpisodeRunner,
    SpreadTaskSource,
    TaskDrawer,
    TaskSource,
)
from trustee_rl.schema import StageName, StageRecord, Task
from trustee_rl.sim.catalog import load_catalog
from trustee_rl.store import RunStore
from trustee_rl.task_files import FileTaskSource, load_task_file
from trustee_rl.train.config import TrainConfig, TrainingRefused
from trustee_rl.train.control import Reference, control_seed
from trustee_rl.train.lora import base_quantization, check_qlora_support, save_merged, with_adapter
from trustee_rl.train.ranks import Ranks, check_split, launched_processes, warm_start_share
from trustee_rl.train.rollout import vllm_policy
from trustee_rl.train.steps import StepContext, StepRecorder
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
    "tasks",
    "steps",
    "tasks_per_step",
    "group_size",
    "curriculum",
    "judge",
    "taskgen",
    "warm_start",
    "eval",
    "lora",
)

Reporter = Callable[[str], None]


class Training:
    def __init__(
        self,
        config: TrainConfig,
        run_dir: Path,
        report: Reporter = print,
        control_of: Reference | None = None,
    ) -> None:
        check_split(config, launched_processes(), control=control_of is not None)
        self.config = config
        self.run_dir = run_dir
        self.report = report
        self.control_of = control_of
        check_qlora_support(config.lora)
        self.loop = asyncio.new_event_loop()
        catalog = load_catalog(Path(config.catalog) if config.catalog else None)
        self.train_catalog, self.heldout_catalog = catalog.split(
            config.eval.holdout_fraction, config.seed
        )
        # Read before anything is stored: a bad file is refused with nothing written.
        self.task_file = load_task_file(Path(config.tasks)) if config.tasks else None
        self.simulator = CachedLM(open_lm(config.simulator, config.simulator_model))
        self.environment = Environment(
            self.simulator, self.train_catalog, config.judge, config.taskgen
        )
        self.ranks = Ranks.start()
        if self.ranks.is_main:  # the store's one writer; the other ranks never open it
            self.store, self.resumed = RunStore.open_or_create(
                run_dir, config.model_dump(mode="json"), resume_keys=RESUME_KEYS
            )
        else:
            self.report = _quiet  # one log, the main rank's

    def run(self) -> dict[str, StageRecord]:
        try:
            self._run()
            return self.store.stages() if self.ranks.is_main else {}
        finally:
            self.loop.run_until_complete(self.simulator.aclose())
            self.loop.close()
            if self.ranks.is_main:
                self.store.close()

    def _run(self) -> None:
        if self.control_of is not None:
            self._control(self.control_of)
            return
        config = self.config
        policy = self._open_policy(config.policy)  # first: a bad policy fails before any work
        main = self.ranks.is_main
        # Held-out tasks and scores are the main rank's; every rank learns which stages are done.
        heldout = self._heldout_tasks() if main else []
        stages = self.ranks.from_main(lambda: self.store.stages())
        if main and "base" not in stages:
            self._score("base", heldout, policy)
        warm_dir = self.run_dir / "warm_start"
        if config.warm_start.enabled:
            warm = stages.get("warm_start")
            if warm is None:
                self._warm_start(policy, warm_dir)
                self.ranks.barrier()  # until the main rank has saved what every rank loads
            if warm is not None or config.lora.enabled or self.ranks.world_size > 1:
                # GRPO starts from the warm-started weights (a GRPO checkpoint, if any, is
                # loaded onto them), an adapter afresh, relative to them; every rank alike.
                policy = self._open_policy(str(warm_dir))
            if main and (warm is None or warm.scores is None):
                self._score("warm_start", heldout, policy)
        started = time.perf_counter()
        self._grpo(policy)
        if main:  # saved and scored once
            self._save(policy, self.run_dir / "final")
            wall_s = round(time.perf_counter() - started, 1)
            self._score("grpo", heldout, policy, {"wall_s": wall_s})

    def _control(self, reference: Reference) -> None:
        """Supervised training from the reference's warm start, for its GRPO's wall time."""
        config = self.config
        if not self.store.heldout_tasks() and reference.heldout:
            self.store.freeze_heldout_tasks(reference.heldout)
        for name in ("base", "warm_start"):
            if name in reference.stages and name not in self.store.stages():
                self.store.save_stage(reference.stages[name])
        trained = "control" in self.store.stages()  # a resumed control only has to be scored
        policy = self._open_policy(
            str(self.run_dir / "final" if trained else reference.warm_start_dir)
        )
        if not trained:
            started = time.perf_counter()
            # Fresh demonstrations, more than the budget can use: the clock ends the pass.
            demos = config.warm_start.model_copy(
                update={
                    "demos": 8 * config.warm_start.demos,
                    "max_attempts": 16 * config.warm_start.demos,
                    "epochs": 100,
                }
            )
            harvest = self.loop.run_until_complete(
                collect_demonstrations(
                    self.environment, demos, config.curriculum, control_seed(config.seed)
                )
            )
            budget = max(reference.grpo_seconds - (time.perf_counter() - started), 1.0)
            self.report(
                f"control: supervised training on {len(harvest.demos)} fresh demonstrations "
                f"for {budget:.0f} s (the reference's GRPO took {reference.grpo_seconds:.0f} s)"
            )
            result = supervised_pass(
                policy.model,
                policy.tokenizer,
                [
                    tokenize_demonstration(d, policy.tokenizer, policy.chat_format)
                    for d in harvest.demos
                ],
                demos,
                self.run_dir / "control_trainer",
                config.seed,
                bf16=config.bf16,
                gradient_checkpointing=config.gradient_checkpointing,
                budget_s=budget,
            )
            self._save(policy, self.run_dir / "final")
            training = result | {"wall_s": round(time.perf_counter() - started, 1)}
            self.store.save_stage(StageRecord(name="control", training=training))
        self._score("control", self.store.heldout_tasks(), policy)

    # -- the policy's weights ---------------------------------------------------------------
    def _open_policy(self, source: str) -> TransformersPolicy:
        """The policy to train, from `source`: with a fresh adapter, or with its top layers (or
        all) trainable."""
        config = self.config
        # An adapter's base is frozen: it needs no float32 master copy.
        half = config.bf16 and config.lora.enabled
        model, tokenizer = load_policy(
            source,
            torch.bfloat16 if half else torch.float32,
            offline=config.hub_offline,
            quantization=base_quantization(config.lora),
        )
        if config.lora.enabled:
            model = with_adapter(
                model, config.lora, config.trainable_layers, config.gradient_checkpointing
            )
        else:
            train_top_layers(model, config.trainable_layers)
        return TransformersPolicy(
            model,
            tokenizer,
            name=policy_label(source),
            chat_format=config.chat_format,
            max_new_tokens=config.max_turn_tokens,
            temperature=config.temperature,
            batch_size=config.tasks_per_step * config.group_size,
            batch_sampling=True,
            bf16=config.bf16,
        )

    def _save(self, policy: TransformersPolicy, out_dir: Path) -> None:
        """A plain checkpoint in `out_dir`; with LoRA, merged, and the adapter beside it."""
        if self.config.lora.enabled:
            policy.model = save_merged(policy.model, policy.tokenizer, out_dir, policy.chat_format)
        else:
            save_policy(policy.model, policy.tokenizer, out_dir, policy.chat_format)

    def _training_tasks(self, curriculum: Curriculum) -> TaskDrawer:
        if self.task_file is not None:
            return FileTaskSource(self.task_file)
        return TaskSource(self.environment, curriculum, self.config.seed, TRAINING)

    # -- held-out evaluation -----------------------------------------------------------------
    def _heldout_tasks(self) -> list[Task]:
        frozen = self.store.heldout_tasks()
        if frozen or self.config.eval.tasks == 0:
            return frozen
        self.report(
            f"freezing {self.config.eval.tasks} held-out tasks from "
            f"{len(self.heldout_catalog.domains)} unseen domains, "
            f"difficulty 1 to {self.config.eval.max_level:g}"
        )
        environment = Environment(
            self.simulator, self.heldout_catalog, self.config.judge, self.config.taskgen
        )
        source = SpreadTaskSource(
            environment,
            self.config.curriculum,
            self.config.eval.seed,
            HELDOUT,
            self.config.eval.max_level,
        )
        tasks = self.loop.run_until_complete(source.draw_many(self.config.eval.tasks))
        self.store.freeze_heldout_tasks(tasks)
        return tasks

    def _score(
        self,
        stage: StageName,
        tasks: list[Task],
        policy: TransformersPolicy,
        training: dict[str, float] | None = None,
    ) -> None:
        if not tasks:
            return
        started = time.perf_counter()
        greedy = TransformersPolicy(
            policy.model,
            policy.tokenizer,
            name=policy.name,
            chat_format=policy.chat_format,
            max_new_tokens=self.config.eval.reply_tokens,
            temperature=0.0,
            stop_after_call=True,  # only the first call is scored: what follows costs time
            bf16=self.config.bf16,
        )
        scores = self.loop.run_until_complete(
            score_first_replies(
                greedy,
                tasks,
                lambda done: self.report(f"held-out {stage}: {done}/{len(tasks)} first replies"),
            )
        )
        previous = self.store.stages().get(stage)
        self.store.save_stage(
            StageRecord(
                name=stage,
                scores=scores,
                training=training or (previous.training if previous else {}),
                wall_s=round(time.perf_counter() - started, 1),
            )
        )
        self.report(f"held-out {stage}: " + format_scores(scores))

    # -- warm start --------------------------------------------------------------------------
    def _warm_start(self, policy: TransformersPolicy, out_dir: Path) -> None:
        config = self.config.warm_start
        started = time.perf_counter()
        # Collected once; every rank trains on its share of each batch.
        harvest = self.ranks.from_main(
            lambda: self.loop.run_until_complete(
                collect_demonstrations(
                    self.environment, config, self.config.curriculum, self.config.seed
                )
            )
        )
        demos, tried = harvest.demos, harvest.tasks_tried
        if not demos:
            raise TrainingRefused(
                f"warm start: the simulator produced no accepted demonstration in {tried} tasks"
            )
        self.report(
            f"warm start: {len(demos)} demonstrations accepted of {tried} tasks "
            f"({harvest.rejected} rejected by the judge); supervised pass"
        )
        examples = [
            tokenize_demonstration(demo, policy.tokenizer, policy.chat_format) for demo in demos
        ]
        result = supervised_pass(
            policy.model,
            policy.tokenizer,
            examples,
            warm_start_share(config, self.ranks.world_size),
            self.run_dir / "warm_start_trainer",
            self.config.seed,
            bf16=self.config.bf16,
            gradient_checkpointing=self.config.gradient_checkpointing,
        )
        if not self.ranks.is_main:  # the main rank saves and records the pass
            return
        self._save(policy, out_dir)
        calls = harvest.sim_calls
        training = result | {
            "demos": float(len(demos)),
            "tasks_tried": float(tried),
            "demos_rejected": float(harvest.rejected),
            "demo_simulator_calls": float(len(calls)),
            "demo_simulator_tokens": float(
                sum(c.usage.prompt_tokens + c.usage.completion_tokens for c in calls)
            ),
            "wall_s": round(time.perf_counter() - started, 1),
        }
        # Recorded now, so the scores that follow are not the only trace of the pass.
        self.store.save_stage(StageRecord(name="warm_start", training=training))

    # -- GRPO --------------------------------------------------------------------------------
    def _grpo_checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first. A kill while one is written leaves a directory
        without trainer_state.json (TRL writes it last); such a checkpoint is not resumed from."""
        folder = self.run_dir / "checkpoints"
        found = folder.glob("checkpoint-*/trainer_state.json") if folder.exists() else []
        return sorted((path.parent for path in found), key=lambda p: int(p.name.split("-")[1]))

    def _grpo(self, policy: TransformersPolicy) -> None:
        from datasets import Dataset
        from trl import GRPOConfig

        config = self.config
        per_step = config.tasks_per_step * config.group_size
        checkpoints = self._grpo_checkpoints()
        resume_step = int(checkpoints[-1].name.split("-")[1]) if checkpoints else 0

        def rewind() -> CurriculumState | None:
            # Steps after the last checkpoint are replayed by TRL; their records are replaced,
            # not duplicated.
            self.store.rewind(first_episode=resume_step * per_step, first_step=resume_step)
            states = dict(self.store.curriculum_states())
            return CurriculumState.model_validate(states[resume_step - 1]) if resume_step else None

        # Every rank resumes the curriculum where the main rank's store says.
        curriculum = Curriculum(config.curriculum, self.ranks.from_main(rewind))
        store = self.store if self.ranks.is_main else None
        runner = EpisodeRunner(
            self.environment,
            policy,
            new_ledger=policy.new_ledger,
            max_episode_tokens=config.max_episode_tokens,
            store=store,
        )
        recorder = StepRecorder(
            StepContext(config, store, self.loop, self.report, self.ranks),
            runner,
            self._training_tasks(curriculum),
            curriculum,
        )
        arguments = GRPOConfig(
            **grpo_arguments(config, self.run_dir / "checkpoints", self.ranks.world_size)
        )
        # TRL saves `processing_class` into every checkpoint: with the serving template each one
        # is as self-describing as final/ (the live format renders from its own template).
        with contextlib.suppress(ChatTemplateMismatch):
            policy.tokenizer.chat_template = policy.chat_format.serving_template()
        slots = [{"prompt": f"slot-{i}"} for i in range(config.steps * config.tasks_per_step)]
        # TensorBoard's callback reads its folder when the trainer is built.
        with _tensorboard_dir(self.run_dir / "tensorboard"):
            trainer = recorder.trainer_class()(
                model=policy.model,
                reward_funcs=[simulated_reward],
                args=arguments,
                train_dataset=Dataset.from_list(slots),
                processing_class=policy.tokenizer,
                rollout_func=recorder,
            )
        policy.model = trainer.model
        if config.use_vllm:  # TRL's engine exists now; it loads the trained weights every step
            sampler = vllm_policy(trainer.vllm_generation, policy)
            runner.policy, runner.new_ledger = sampler, sampler.new_ledger
        trainer.train(resume_from_checkpoint=str(checkpoints[-1]) if checkpoints else None)


def _quiet(line: str) -> None:
    """The report of a rank other than the main one."""


@contextlib.contextmanager
def _tensorboard_dir(default: Path) -> Iterator[None]:
    """TensorBoard writes where TENSORBOARD_LOGGING_DIR says: the user's choice if they made one,
    else the run's own folder, for this training only (a second run in the same process must
    not write into the first one's)."""
    if "TENSORBOARD_LOGGING_DIR" in os.environ:
        yield
        return
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(default)
    try:
        yield
    finally:
        del os.environ["TENSORBOARD_LOGGING_DIR"]


def grpo_arguments(config: TrainConfig, output_dir: Path, processes: int = 1) -> dict[str, Any]:
    """TRL's GRPOConfig arguments: trustee's defaults, then the `trl:` section, then the fields
    trustee's own settings decide (the keys of `GRPO_SET_BY_TRUSTEE`, which `trl:` may not set).
    Over several `processes` each accumulates its share of the step."""
    per_step = config.tasks_per_step * config.group_size
    defaults: dict[str, Any] = {
        "lr_scheduler_type": "constant",
        "report_to": ["tensorboard"],
        "disable_tqdm": True,
    }
    decided = {
        "output_dir": str(output_dir),
        "learning_rate": config.learning_rate,
        "beta": config.kl_beta,
        "epsilon": config.clip_epsilon,
        "num_generations": config.group_size,
        "per_device_train_batch_size": config.micro_batch_size,
        "gradient_accumulation_steps": per_step // (config.micro_batch_size * processes),
        "max_steps": config.steps,
        "save_steps": config.checkpoint_every,
        "seed": config.seed,
        "bf16": config.bf16,
        "gradient_checkpointing": config.gradient_checkpointing,
        "max_completion_length": config.max_episode_tokens * 4,
        "temperature": config.temperature,
        "use_vllm": config.use_vllm,
        "use_cpu": not has_cuda(),
        "logging_steps": 1,
        "save_only_model": False,
        "steps_per_generation": None,  # from generation_batch_size: one rollout per step
        "generation_batch_size": per_step,
        "num_iterations": 1,
    }
    return defaults | config.trl | decided


def train_top_layers(model: Any, count: int | None) -> None:
    """Leave only the top `count` transformer layers trainable (None: every parameter). Lower
    layers, the embeddings and (tied to them) the output head stay as they are, so
    backpropagation stops early: on a CPU, where a step is compute-bound, that halves its cost."""
    if count is None:
        return
    layers = getattr(model.get_decoder(), "layers", None)
    if layers is None:
        raise ValueError(
            f"trainable_layers: {type(model).__name__} has no decoder layer list; leave it unset"
        )
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for layer in layers[-count:]:
        for parameter in layer.parameters():
            parameter.requires_grad_(True)


def simulated_reward(
    prompts: list[Any], completions: list[Any], reward: list[float], **_: Any
) -> list[float]:
    """The judge's reward, computed during the rollout and forwarded by TRL."""
    return reward
