"""Does `trustee simulate` survive a faulty server without losing episodes or inventing rewards?

Policy and simulator both talk to one loopback server (a tool-using agent and schema-valid
simulators) that injects faults: `--malformed` of the requests for JSON get broken content, and
`--transport` of all requests, split evenly, get a truncated body, HTTP 500, HTTP 429 with
Retry-After, a hang past the client's timeout, or a dropped connection. The same run without
faults gives the baseline. Prints, read from the run store: episodes requested, stored, scored,
unscored by reason, lost, aborted for a fault a retry could fix (a call that failed in transport
after the client's retries), and rewards invented (scored although the LM judge gave no answer).
The last three must be 0; the exit status says whether they are. Malformed content that outlasts
a simulator's three tries leaves an episode unscored, as a model that keeps writing nonsense would:
compare its reason's count with the run without faults.

    python benchmarks/faults.py [--episodes 200] [--malformed 0.3] [--transport 0.1]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trustee_rl.testing.faults import FaultShares, FaultyOpenAIServer, RunTally, tally_run
from trustee_rl.testing.openai_server import AgentResponder

# A hang costs the client one timeout; this keeps hangs cheap and still far above a loopback answer.
CLIENT_TIMEOUT_S = 1.0
BACKOFF_MAX_S = 2.0


def simulate_args(url: str, run_dir: Path, args: argparse.Namespace) -> list[str]:
    return [
        "simulate",
        "--run-dir",
        str(run_dir),
        "--episodes",
        str(args.episodes),
        "--seed",
        str(args.seed),
        "--concurrency",
        str(args.concurrency),
        "--policy",
        url,
        "--policy-model",
        "loopback-model",
        "--simulator",
        url,
        "--simulator-model",
        "loopback-model",
        "--judge",
        "lm",
        "--json",
        "--set",
        f"http.timeout_s={CLIENT_TIMEOUT_S}",
        "--set",
        f"http.backoff_max_s={BACKOFF_MAX_S}",
    ]


def run(shares: FaultShares, run_dir: Path, args: argparse.Namespace) -> tuple[RunTally, float]:
    """Simulate against a server injecting `shares`; (what the store holds, wall seconds)."""
    server = FaultyOpenAIServer(
        AgentResponder(args.seed),
        shares=shares,
        seed=args.seed,
        hang_s=10 * CLIENT_TIMEOUT_S,
        retry_after_s=1.0,
    )
    with server:
        command = simulate_args(server.base_url, run_dir, args)
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "trustee_rl.cli", *command], capture_output=True, text=True
        )
        wall_s = time.perf_counter() - started
    if shares.transport or shares.malformed:
        print("command: trustee " + " ".join(command))
        injected = ", ".join(f"{name} {count}" for name, count in server.injected.most_common())
        print(f"faults injected: {injected} (in {len(server.requests)} chat requests)")
    if done.returncode != 0:
        print(f"simulate exited with {done.returncode}: {done.stderr.strip()[-500:]}")
    return tally_run(run_dir, args.episodes), wall_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--malformed", type=float, default=0.3)
    parser.add_argument("--transport", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    shares = FaultShares.spread(malformed=args.malformed, transport=args.transport)
    with tempfile.TemporaryDirectory() as workdir:
        faulty, faulty_s = run(shares, Path(workdir) / "faults", args)
        clean, clean_s = run(FaultShares(), Path(workdir) / "clean", args)
    rows = [
        ("episodes requested", faulty.requested, clean.requested),
        ("stored", faulty.stored, clean.stored),
        ("scored", faulty.scored, clean.scored),
        ("unscored", faulty.stored - faulty.scored, clean.stored - clean.scored),
        *(
            (f"  {reason}", faulty.unscored_by_reason.get(reason, 0), clean_count)
            for reason, clean_count in _reasons(faulty, clean)
        ),
        ("lost (0 expected)", faulty.lost, clean.lost),
        ("aborted for a fault a retry could fix (0 expected)", faulty.aborted, clean.aborted),
        ("rewards invented (0 expected)", faulty.invented, clean.invented),
        ("wall seconds", f"{faulty_s:.1f}", f"{clean_s:.1f}"),
    ]
    width = max(len(name) for name, _, _ in rows)
    print(f"{'':{width}}  {'faults':>8}  {'no faults':>9}")
    for name, with_faults, without in rows:
        print(f"{name:{width}}  {with_faults!s:>8}  {without!s:>9}")
    if faulty.lost or faulty.aborted or faulty.invented:
        raise SystemExit(1)


def _reasons(faulty: RunTally, clean: RunTally) -> list[tuple[str, int]]:
    """Every unscored reason of either run, with its count in the run without faults."""
    names = {**faulty.unscored_by_reason, **clean.unscored_by_reason}
    return [(name, clean.unscored_by_reason.get(name, 0)) for name in names]


if __name__ == "__main__":
    main()
