"""`trustee eval` settings: one typed model per command, from flags, `--config FILE.yaml` and
`--set key=value`.

Layers, each over the one before: the flags' defaults, the config file, the flags given on the
command line, then each `--set` (as `trustee train` applies them, trustee_rl/settings.py). Every
setting has a flag except `concurrency`, the judge's keys beyond its mode and `eval sim`'s
`taskgen`, which only a file or `--set` changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trustee_rl.settings import load_settings, merge, parse_override
from trustee_rl.sim.judge import JudgeConfig
from trustee_rl.sim.taskgen import TaskGenConfig

Settings = TypeVar("Settings", bound=BaseModel)


def _comma_list(value: Any) -> Any:
    """A comma-separated string (as the flags take them) is a list, as YAML writes one."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class ModelSettings(BaseModel):
    """The model under evaluation and where its results go."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        description="'embedded', a checkpoint dir, a hub id, a .gguf file or an http(s):// URL"
    )
    model_name: str | None = None
    out: Path | None = None
    max_tokens: int = Field(ge=1)


class BfclSettings(ModelSettings):
    categories: list[str] = Field(min_length=1)
    limit: int | None = Field(default=None, ge=1)
    concurrency: int = Field(default=16, ge=1)

    _split_categories = field_validator("categories", mode="before")(_comma_list)


class SimSettings(ModelSettings):
    run_dir: Path | None = None
    tasks: Path | None = None
    seed: int
    n: int | None = Field(default=None, ge=1)
    split_seed: int
    holdout_fraction: float = Field(ge=0.01, le=0.99)
    # New tasks at one difficulty, or spread over 1..max_level; at most one of them.
    level: float | None = Field(default=None, ge=1, le=100)
    max_level: float | None = Field(default=None, ge=1, le=100)
    simulator: str
    simulator_model: str | None = None
    # As in `trustee simulate`: a mapping (--judge sets judge.mode; --set judge.reward=synth).
    judge: JudgeConfig
    # How new tasks are written, as a training run's `taskgen` (--set taskgen.request_writer=...).
    taskgen: TaskGenConfig = Field(default_factory=TaskGenConfig)
    first_turns: bool = False
    # None: the mode's own (simbench.DEFAULT_CONCURRENCY episodes, or heldout.CHUNK first replies).
    concurrency: int | None = Field(default=None, ge=1)


class Tau2Settings(ModelSettings):
    domains: list[str]
    split: str
    trials: int = Field(ge=1)
    user_simulator: str
    user_model: str | None = None
    limit: int | None = Field(default=None, ge=1)
    max_steps: int = Field(ge=1)
    concurrency: int = Field(default=8, ge=1)

    _split_domains = field_validator("domains", mode="before")(_comma_list)


class CompareSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dirs: list[Path]
    plot: Path | None


class _File(BaseModel):
    """Whatever a config file holds; the command's own model judges it."""

    model_config = ConfigDict(extra="allow")


def command_settings(
    model: type[Settings],
    defaults: Mapping[str, Any],
    given: Mapping[str, Any],
    config_file: Path | None,
    overrides: Sequence[str],
) -> Settings:
    """`defaults` are the flags' defaults, `given` the flags typed on the command line."""
    values = dict(defaults)
    merge(values, load_settings(_File, None, config_file).model_dump())
    merge(values, dict(given))
    for item in overrides:
        merge(values, parse_override(item))
    return model.model_validate(values)
