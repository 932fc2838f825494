"""One way every command takes its settings: defaults (a preset), then a YAML file, then each
`--set key=value` (dotted keys, YAML values), validated by the command's typed config model.
Unknown keys and bad values are refused by the model with a one-line error."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel

Settings = TypeVar("Settings", bound=BaseModel)


def load_settings(
    model: type[Settings],
    defaults: dict[str, Any] | None = None,
    config_file: Path | None = None,
    overrides: Sequence[str] = (),
) -> Settings:
    values: dict[str, Any] = dict(defaults or {})
    if config_file is not None:
        merge(values, mapping(_read_config_file(config_file) or {}, f"config {config_file}"))
    for item in overrides:
        merge(values, parse_override(item))
    return model.model_validate(values)


def _read_config_file(path: Path) -> Any:
    """The YAML document in `path`; any problem reading it is one line naming the file."""
    where = f"config {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{where}: not UTF-8 text (byte {error.object[error.start]:#04x} at offset {error.start})"
        ) from error
    except OSError as error:
        raise ValueError(f"{where}: {error.strerror or error}") from error
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"{where}: {_yaml_problem(error)}") from error


def _yaml_problem(error: yaml.YAMLError) -> str:
    """`line L, column C: problem`, without PyYAML's multi-line excerpt of the text."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark and error.problem:
        mark = error.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {error.problem}"
    return " ".join(str(error).split())


def parse_override(item: str) -> dict[str, Any]:
    """`a.b=3` -> {"a": {"b": 3}}."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set {item!r}: expected key=value")
    nested: dict[str, Any] = {}
    cursor = nested
    *parents, leaf = key.strip().split(".")
    for part in parents:
        cursor = cursor.setdefault(part, {})
    try:
        cursor[leaf] = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise ValueError(f"--set {item!r}: {_yaml_problem(error)}") from error
    return nested


def mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a mapping of settings")
    return value


def merge(base: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
