"""Which command's run a run dir holds. It knows the settings of both `simulate` and `train`, so it
lives apart from cli_common, which evaluation shares and which must not reach training."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pydantic import BaseModel

RunKind = Literal["simulate", "train"]


def check_run_kind(run_dir: Path, kind: RunKind) -> None:
    """Refuse a run dir that holds another command's run, reading it only.

    Checked before a resume compares settings, which would report a difference in some setting."""
    from trustee_rl.store import STORE_FILE, RunStore

    if not (run_dir / STORE_FILE).exists():
        return
    with RunStore.open(run_dir, readonly=True) as store:
        found = run_kind(store.config)
    if found != kind:
        raise ValueError(
            f"run dir {run_dir} holds a {found} run, not a {kind} run: choose another run dir"
        )


def run_kind(config: dict[str, Any]) -> RunKind:
    """Which command stored these settings: the one that knows the most of them (each kind has
    settings the other lacks; a setting since renamed still leaves the rest to tell)."""
    from trustee_rl.simulation import SimulateConfig
    from trustee_rl.train.config import TrainConfig

    kinds: dict[RunKind, type[BaseModel]] = {"simulate": SimulateConfig, "train": TrainConfig}
    return max(kinds, key=lambda kind: len(config.keys() & kinds[kind].model_fields.keys()))
