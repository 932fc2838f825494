"""`trustee train` configuration: one typed model, presets shipped as YAML, `--set key=value` overrides."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from trustee_rl.curriculum import CurriculumConfig
from trustee_rl.sim.judge import JudgeConfig
from trustee_rl.sim.taskgen import TaskGenConfig

PRESETS = ("cpu", "paper")


class TrainingRefused(RuntimeError):
    """Training would teach nothing (e.g. no reward variance); the message says what to change."""


class WarmStartConfig(BaseModel):
    """A short supervised pass on demonstrations the simulated environment produces (SPEC: cold start)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    demos: int = Field(default=64, ge=1, description="accepted demonstrations to collect")
    max_attempts: int = Field(default=256, ge=1, description="tasks tried to collect them")
    epochs: int = Field(default=2, ge=1)
    learning_rate: float = 5e-5
    batch_size: int = 8


class EvalConfig(BaseModel):
    """Held-out simulated tasks, frozen per run, scored before and after each stage."""

    model_config = ConfigDict(extra="forbid")

    tasks: int = Field(default=64, ge=0, description="0 skips the stage comparison")
    seed: int = 1_000_003
    holdout_fraction: float = Field(
        default=0.2, ge=0, lt=1, description="catalog domains never trained on"
    )


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: str = Field(
        default="embedded", description="'embedded' or a Hugging Face checkpoint directory"
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
    prefill: str | None = Field(
        default=None, description="text forced at the start of each policy reply"
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
    return _mapping(yaml.safe_load(text), f"preset {name}")


def load_train_config(
    preset_name: str = "cpu", config_file: Path | None = None, overrides: Sequence[str] = ()
) -> TrainConfig:
    """Preset, then the config file, then `--set key=value` overrides (dotted keys, YAML values)."""
    values = preset(preset_name)
    if config_file is not None:
        try:
            loaded = yaml.safe_load(config_file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as error:
            raise ValueError(f"config {config_file}: {' '.join(str(error).split())}") from error
        _merge(values, _mapping(loaded or {}, f"config {config_file}"))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected key=value")
        nested: dict[str, Any] = {}
        cursor = nested
        *parents, leaf = key.strip().split(".")
        for part in parents:
            cursor = cursor.setdefault(part, {})
        cursor[leaf] = yaml.safe_load(raw)
        _merge(values, nested)
    return TrainConfig.model_validate(values)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a mapping of settings")
    return value


def _merge(base: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
