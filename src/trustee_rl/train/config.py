"""`trustee train` configuration: one typed model, presets shipped as YAML, `--set key=value` overrides."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from trustee_rl.curriculum import CurriculumConfig
from trustee_rl.settings import load_settings, mapping
from trustee_rl.sim.judge import JudgeConfig
from trustee_rl.sim.taskgen import TaskGenConfig

PRESETS = ("cpu", "paper")


class TrainingRefused(RuntimeError):
    """Training would teach nothing (e.g. no reward variance); the message says what to change."""


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
    seed: int = 1_000_003
    holdout_fraction: float = Field(
        default=0.2, ge=0, lt=1, description="catalog domains never trained on"
    )


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: str = Field(
        default="embedded", description="'embedded', a Hugging Face checkpoint dir or a hub id"
    )
    chat_format: Literal["auto", "chatml-hermes", "qwen"] = "auto"
    simulator: str = "embedded"
    simulator_model: str | None = None
    catalog: str | None = None
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
    bf16: bool = False
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
