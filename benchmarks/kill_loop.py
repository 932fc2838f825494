"""Crash safety under SIGKILL: `trustee simulate` and `trustee train` killed at random points.

Each command runs once uninterrupted, then is killed `--kills` times at seeded random points
(within the uninterrupted run's wall time) and resumed each time with the same command line, until
a run finishes. Every finished run's store is audited: `PRAGMA integrity_check`, no orphan or
duplicate rows, and totals (tasks, episodes, verdicts, rewards, steps, ...) equal to the
uninterrupted run's. The simulator (and the simulate policy) is a loopback OpenAI-compatible
server; `simulate-embedded` uses the embedded simulator model instead, and is slow on a CPU.
The code must stay the same for the whole loop: a resume under changed code (a judge rule, a
setting's default) makes other records, and the totals differ for that reason alone.

    python benchmarks/kill_loop.py [--kills 20] [--seed 0] [--commands simulate,train]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from trustee_rl.store import STORE_FILE
from trustee_rl.testing.kill_loop import CommandLine, KillReport, kill_loop
from trustee_rl.testing.openai_server import AgentResponder, LoopbackOpenAIServer
from trustee_rl.testing.tiny_train import TINY_TRAIN

TRUSTEE = [sys.executable, "-m", "trustee_rl.cli"]

KILLED_TRAIN = [*TINY_TRAIN, "steps=2", "judge.mode=rules"]


def simulate(url: str, simulator: str, episodes: int) -> CommandLine:
    def command(run_dir: Path) -> list[str]:
        return [
            *TRUSTEE,
            "simulate",
            "--run-dir",
            str(run_dir),
            "--episodes",
            str(episodes),
            "--seed",
            "3",
            "--concurrency",
            "4",
            "--policy",
            url,
            "--simulator",
            simulator,
            "--json",
        ]

    return command


def train(url: str) -> CommandLine:
    def command(run_dir: Path) -> list[str]:
        settings = [f"simulator={url}", *KILLED_TRAIN]
        resume = ["--resume"] if (run_dir / STORE_FILE).exists() else []
        return [
            *TRUSTEE,
            "train",
            "--run-dir",
            str(run_dir),
            *resume,
            *(part for item in settings for part in ("--set", item)),
        ]

    return command


COMMANDS: dict[str, Callable[[str], CommandLine]] = {
    "simulate": lambda url: simulate(url, url, episodes=120),
    "simulate-embedded": lambda url: simulate(url, "embedded", episodes=2),
    "train": train,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="kills per command")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill points")
    parser.add_argument(
        "--commands",
        default="simulate,train",
        help=f"comma-separated, of: {', '.join(COMMANDS)}",
    )
    parser.add_argument("--work-dir", type=Path, help="keep the runs here (default: temporary)")
    args = parser.parse_args()
    names = args.commands.split(",")
    unknown = sorted(set(names) - set(COMMANDS))
    if unknown:
        parser.error(f"unknown command {unknown[0]!r}: choose from {', '.join(COMMANDS)}")
    # The same thread count for every run, so the uninterrupted run is a fair reference.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    reports: list[KillReport] = []
    with (
        tempfile.TemporaryDirectory() as scratch,
        LoopbackOpenAIServer(AgentResponder(seed=0), delay_s=0.02) as server,
    ):
        for name in names:
            work_dir = (args.work_dir or Path(scratch)) / name
            work_dir.mkdir(parents=True, exist_ok=True)
            report = kill_loop(
                name,
                COMMANDS[name](server.base_url),
                work_dir,
                kills=args.kills,
                seed=args.seed,
                timeout_s=1800,
            )
            print("\n".join(report.lines()), flush=True)
            reports.append(report)
    sys.exit(0 if all(report.ok for report in reports) else 1)


if __name__ == "__main__":
    main()
