"""Time and peak memory of each stage of a `trustee train` run.

    python benchmarks/train_stages.py --run-dir runs/bench [-- any trustee train options]

Runs `trustee train` as a child process, samples the resident memory of it and its children
every half second, and splits the run at each line it prints (each marks a stage's end: held-out
scores, the warm start's harvest, a GRPO step). Prints one row per stage (wall seconds, peak RSS)
and the totals; the run store keeps the stages' own records as usual.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SAMPLE_S = 0.5
NOISE = ("Loading", "Building", "Writing", "output =")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Segment:
    label: str
    seconds: float
    peak_rss: int


def tree_rss(root: int) -> int:
    """Resident bytes of `root` and all its descendants, read from /proc (Linux)."""
    parents: dict[int, int] = {}
    resident: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            pages = int((entry / "statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):  # a process that just ended
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
        resident[int(entry.name)] = pages * PAGE
    members, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        members.update(children)
        frontier += children
    return sum(resident.get(pid, 0) for pid in members)


def run(command: list[str]) -> tuple[list[Segment], int]:
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = {"segment": 0, "run": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            rss = tree_rss(child.pid)
            peak["segment"] = max(peak["segment"], rss)
            peak["run"] = max(peak["run"], rss)
            time.sleep(SAMPLE_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    segments: list[Segment] = []
    started = time.perf_counter()
    assert child.stdout is not None
    for line in child.stdout:
        sys.stdout.write(line)
        text = line.strip()
        if not text or not text[0].isalpha() or text.startswith(NOISE) or "warn" in text:
            continue  # library chatter (progress bars, warnings, logged dicts), not a stage
        now = time.perf_counter()
        segments.append(Segment(text[:70], now - started, peak["segment"]))
        started, peak["segment"] = now, 0
    code = child.wait()
    done.set()
    sampler.join()
    segments.append(Segment("(exit)", time.perf_counter() - started, peak["segment"]))
    if code:
        raise SystemExit(f"trustee train exited with {code}")
    return segments, peak["run"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("train_args", nargs="*", help="more `trustee train` options, after --")
    args = parser.parse_args()
    command = [sys.executable, "-m", "trustee_rl.cli", "train", "--run-dir", args.run_dir]
    segments, peak = run([*command, *args.train_args])
    total = sum(segment.seconds for segment in segments)
    print(f"\n{'stage ends with':<72}{'wall s':>8}{'peak GB':>9}")
    for segment in segments:
        print(f"{segment.label:<72}{segment.seconds:>8.1f}{segment.peak_rss / 1e9:>9.2f}")
    print(f"{'total':<72}{total:>8.1f}{peak / 1e9:>9.2f}")


if __name__ == "__main__":
    main()
