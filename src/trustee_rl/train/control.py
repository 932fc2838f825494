"""The control arm: supervised training continued from a run's warm start for as long as that
run's GRPO took, on fresh demonstrations. Whatever GRPO gains over the control, it gains through
the reward, not through more compute or more of the warm start's data.

    trustee train --control-of runs/x --run-dir runs/x-control

The control takes the reference run's settings, its frozen held-out tasks and its base and
warm-start stage records (the same policies on the same tasks), so its held-out scores pair with
the reference's stage by stage, and its `final/` checkpoint goes to the same benchmarks.
"""

from __future__ import annotations

from pathlib import Path

from trustee_rl.schema import StageRecord, Task
from trustee_rl.seeding import derive_seed
from trustee_rl.store import RunStore
from trustee_rl.train.config import TrainConfig, TrainingRefused


def reference_settings(reference: Path) -> TrainConfig:
    """The settings the reference run trained under."""
    with RunStore.open(reference, readonly=True) as store:
        return TrainConfig.model_validate(store.config)


class Reference:
    """What the control takes from the run it controls for."""

    def __init__(self, run_dir: Path) -> None:
        with RunStore.open(run_dir, readonly=True) as store:
            self.heldout: list[Task] = store.heldout_tasks()
            self.stages: dict[str, StageRecord] = store.stages()
            step_times = [value for _, name, value in store.metrics() if name == "step_time_s"]
        if "grpo" not in self.stages:
            raise TrainingRefused(f"{run_dir} has no finished GRPO stage to control for")
        if not (run_dir / "warm_start").is_dir():
            raise TrainingRefused(f"{run_dir} has no warm_start/ checkpoint to continue from")
        self.warm_start_dir = run_dir / "warm_start"
        self.grpo_seconds = sum(step_times)


def control_seed(seed: int) -> int:
    """Demonstrations for the control come from tasks the warm start never drew."""
    return derive_seed(seed, "control")
