"""Where a GRPO step's time goes: policy generation, simulator calls, judging, optimisation.

Reads the per-step metrics of a training run (its run dir), or, given none, trains a few steps of
the cpu preset without warm start or held-out scoring into a temporary dir first. Prints each part
as a share of the step, measured in the same steps.

    python benchmarks/train_step.py [RUN_DIR] [--steps 3]
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
from pathlib import Path

from trustee_rl.store import RunStore

PARTS = (
    ("policy_s", "rollout: policy generation"),
    ("environment_s", "rollout: simulator calls (user, tools)"),
    ("judge_s", "judge"),
)


def train(run_dir: Path, steps: int) -> None:
    settings = [
        f"steps={steps}",
        "warm_start.enabled=false",
        "eval.tasks=0",
        "min_informative_groups=0",
    ]
    command = [sys.executable, "-m", "trustee_rl.cli", "train", "--run-dir", str(run_dir)]
    for item in settings:
        command += ["--set", item]
    subprocess.run(command, check=True)


def per_step(run_dir: Path) -> dict[int, dict[str, float]]:
    rows: dict[int, dict[str, float]] = {}
    with RunStore.open(run_dir) as store:
        for step, name, value in store.metrics():
            rows.setdefault(step, {})[name] = value
    return {
        step: row for step, row in rows.items() if not math.isnan(row.get("step_time_s", math.nan))
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", nargs="?", type=Path)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run_dir
        if run_dir is None:
            run_dir = Path(tmp) / "run"
            train(run_dir, args.steps)
        steps = per_step(run_dir)
    if not steps:
        raise SystemExit(f"{run_dir}: no step metrics")
    total = sum(row["step_time_s"] for row in steps.values())
    print(f"{len(steps)} steps, mean step {total / len(steps):.1f} s")
    accounted = 0.0
    for key, label in PARTS:
        spent = sum(row.get(key, 0.0) for row in steps.values())
        accounted += spent
        print(f"  {label:<42} {spent / total:6.1%}")
    print(
        f"  {'optimisation (TRL forward/backward, update)':<42} {(total - accounted) / total:6.1%}"
    )


if __name__ == "__main__":
    main()
