"""`trustee train` configuration: one typed model, presets shipped as YAML, `--set key=value` overrides."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trustee_rl.curriculum import CurriculumConfig
from trustee_rl.settings import load_settings, mapping
from trustee_rl.sim.judge import JudgeConfig
from trustee_rl.sim.taskgen import TaskGenConfig

PRESETS = ("cpu", "paper", "gpu-smoke")

# TRL fields trustee sets from its own settings, so `trl:` / `warm_start.trl:` may not: each names
# the setting to use instead. The trainer arguments are built from exactly these keys.
GRPO_SET_BY_TRUSTEE = {
    "output_dir": "--run-dir",
    "learning_rate": "learning_rate",
    "beta": "kl_beta",
    "epsilon": "clip_epsilon",
    "num_generations": "group_size",
    "per_device_train_batch_size": "micro_batch_size",
    "gradient_accumulation_steps": "tasks_per_step (with group_size and micro_batch_size)",
    "max_steps": "steps",
    "save_steps": "checkpoint_every",
    "seed": "seed",
    "bf16": "bf16",
    "gradient_checkpointing": "gradient_checkpointing",
    "max_completion_length": "max_episode_tokens",
    "temperature": "temperature",
    "use_vllm": "use_vllm",
    "use_cpu": "CUDA_VISIBLE_DEVICES (the GPU is used when one is visible)",
    # The run store records every step, and a resumed run needs the optimiser state.
    "logging_steps": "nothing: trustee logs every step",
    "save_only_model": "nothing: checkpoints keep the optimiser state to resume from",
    # One rollout of tasks_per_step groups per optimiser step, indexed by the step.
    "steps_per_generation": "tasks_per_step",
    "generation_batch_size": "tasks_per_step",
    "num_iterations": "nothing: each rollout is trained on once",
}
SFT_SET_BY_TRUSTEE = {
    "output_dir": "--run-dir",
    "num_train_epochs": "warm_start.epochs",
    "learning_rate": "warm_start.learning_rate",
    "per_device_train_batch_size": "warm_start.micro_batch_size",
    "gradient_accumulation_steps": "warm_start.batch_size",
    "seed": "seed",
    "bf16": "bf16",
    "gradient_checkpointing": "gradient_checkpointing",
    "use_cpu": "CUDA_VISIBLE_DEVICES (the GPU is used when one is visible)",
}


class TrainingRefused(RuntimeError):
    """Training would teach nothing (e.g. no reward variance); the message says what to change."""


def check_trl_fields(
    given: Mapping[str, Any], arguments: type[Any], set_by_trustee: Mapping[str, str], where: str
) -> None:
    """Refuse keys that are no field of the TRL dataclass `arguments`, or that trustee sets."""
    fields = {field.name for field in dataclasses.fields(arguments)}
    for key in given:
        if key in set_by_trustee:
            raise ValueError(f"{where}.{key} is set by trustee: use {set_by_trustee[key]}")
        if key not in fields:
            raise ValueError(f"{where}.{key}: {arguments.__name__} has no such field")


class WarmStartConfig(BaseModel):
    """A short supervised pass on demonstrations the simulated environment produces (SPEC: cold start)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    demos: int = Field(default=512, ge=1, description="accepted demonstrations to collect")
    max_attempts: int = Field(default=1024, ge=1, description="tasks tried to collect them")
    max_level: float = Field(
        default=40.0, ge=1, le=100, description="demonstrations span difficulty levels 1..this"
    )
    epochs: int = Field(default=1, ge=1)
    learning_rate: float = 5e-5
    batch_size: int = Field(default=8, ge=1, description="demonstrations per optimiser step")
    micro_batch_size: int | None = Field(
        default=None,
        ge=1,
        description="demonstrations per forward/backward (None: batch_size); 1 pads nothing and "
        "holds one demonstration's activations, the CPU's choice",
    )

    trl: dict[str, Any] = Field(
        default_factory=dict,
        description="TRL SFTConfig fields for the supervised pass, such as report_to or "
        "lr_scheduler_type",
    )

    @field_validator("trl")
    @classmethod
    def _known_sft_fields(cls, given: dict[str, Any]) -> dict[str, Any]:
        if given:  # TRL is imported only when it is needed
            from trl import SFTConfig

            check_trl_fields(given, SFTConfig, SFT_SET_BY_TRUSTEE, "warm_start.trl")
        return given

    @model_validator(mode="after")
    def _micro_batches_fill_a_batch(self) -> WarmStartConfig:
        if self.micro_batch_size and self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"batch_size {self.batch_size} is not a multiple of micro_batch_size "
                f"{self.micro_batch_size}"
            )
        return self


class EvalConfig(BaseModel):
    """Held-out simulated tasks, frozen per run, scored before and after each stage."""

    model_config = ConfigDict(extra="forbid")

    tasks: int = Field(default=64, ge=0, description="0 skips the stage comparison")
    reply_tokens: int = Field(
        default=160,
        ge=8,
        description="each first reply is read this far at most (and only to its first call's "
        "end); the expected calls of held-out tasks at D=10 run to about 120 tokens",
    )
    max_level: float = Field(
        default=40,
        ge=1,
        le=100,
        description="held-out tasks are spread evenly over difficulty 1..max_level",
    )
    seed: int = 1_000_003
    holdout_fraction: float = Field(
        default=0.2, ge=0, lt=1, description="catalog domains never trained on"
    )


class LoraConfig(BaseModel):
    """Train low-rank adapters (PEFT LoRA) instead of the policy's weights; QLoRA loads the
    frozen base in 4 bits. Each stage saves its merged weights as a plain checkpoint, and the
    adapter beside it."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    r: int = Field(default=16, ge=1, description="adapter rank")
    alpha: int = Field(default=32, ge=1, description="scaling: updates are multiplied by alpha/r")
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = Field(
        default="all-linear", description="module names to adapt, or every linear layer"
    )
    qlora: bool = Field(
        default=False,
        description="load the frozen base in 4 bits (NF4); needs CUDA and bitsandbytes",
    )


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: str = Field(
        default="embedded", description="'embedded', a Hugging Face checkpoint dir or a hub id"
    )
    hub_offline: bool = Field(
        default=False,
        description="read a hub id from the local Hugging Face cache only (as HF_HUB_OFFLINE=1 does)",
    )
    chat_format: Literal["auto", "chatml-hermes", "qwen"] = "auto"
    simulator: str = "embedded"
    simulator_model: str | None = None
    catalog: str | None = None
    # A JSONL file of tasks (`trustee tasks synthesize` or `import` writes one), trained on in turn
    # instead of generated ones; the curriculum then only records.
    tasks: str | None = None
    seed: int = 0

    steps: int = Field(default=20, ge=1)
    tasks_per_step: int = Field(default=2, ge=1)
    group_size: int = Field(default=8, ge=2, description="episodes per task: the GRPO group")
    learning_rate: float = 3e-5
    kl_beta: float = 0.0
    clip_epsilon: float = 0.2
    max_turn_tokens: int = Field(default=96, ge=8, description="policy tokens per reply")
    max_episode_tokens: int = Field(default=384, ge=16, description="policy tokens per episode")
    temperature: float = 1.0
    trainable_layers: int | None = Field(
        default=None,
        ge=1,
        description="train only the top N transformer layers (None: all): backpropagation stops "
        "at the lowest trainable layer, which halves a step's cost on a CPU at N=8 of 30",
    )
    gradient_checkpointing: bool = True
    micro_batch_size: int = Field(default=4, ge=1, description="episodes per forward/backward")
    bf16: bool = Field(
        default="auto",
        validate_default=True,
        description="bf16 autocast over float32 weights; auto: where the machine computes bf16 "
        "natively (a GPU that supports it, a CPU with AMX or AVX-512 bf16), about 2.7 times as "
        "fast there and many times slower elsewhere",
    )
    use_vllm: bool = False
    min_informative_groups: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="refuse to train when fewer groups than this share have reward variance",
    )
    checkpoint_every: int = Field(default=10, ge=1)

    warm_start: WarmStartConfig = Field(default_factory=WarmStartConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    curriculum: CurriculumConfig = Field(default_factory=CurriculumConfig)
    judge: JudgeConfig = Field(default_factory=lambda: JudgeConfig(mode="rules", reward="graded"))
    taskgen: TaskGenConfig = Field(default_factory=TaskGenConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    trl: dict[str, Any] = Field(
        default_factory=dict,
        description="TRL GRPOConfig fields, such as loss_type, scale_rewards or report_to",
    )

    @field_validator("bf16", mode="before")
    @classmethod
    def _resolve_bf16(cls, given: Any) -> Any:
        """ "auto" is resolved once, when settings load: the run records what it used."""
        if given != "auto":
            return given
        from trustee_rl.policy.model import native_bf16

        return native_bf16()

    @field_validator("trl")
    @classmethod
    def _known_grpo_fields(cls, given: dict[str, Any]) -> dict[str, Any]:
        if given:  # TRL is imported only when it is needed
            from trl import GRPOConfig

            check_trl_fields(given, GRPOConfig, GRPO_SET_BY_TRUSTEE, "trl")
        return given


def preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    text = (
        resources.files(__package__).joinpath("presets", f"{name}.yaml").read_text(encoding="utf-8")
    )
    return mapping(yaml.safe_load(text), f"preset {name}")


def load_train_config(
    preset_name: str = "cpu", config_file: Path | None = None, overrides: Sequence[str] = ()
) -> TrainConfig:
    """Preset, then the config file, then `--set key=value` overrides."""
    return load_settings(TrainConfig, preset(preset_name), config_file, overrides)
