"""How much of an episode is trustee-rl itself, and how well do episodes overlap?

A loopback OpenAI-compatible server (its own process, so it does not share our GIL) answers every
call after a fixed delay. Prints, measured in one run:
  (a) the share of episode wall time spent outside LM calls, at one episode at a time;
  (b) episodes/s at 1, 4, 16 and 64 concurrent episodes, divided by the ideal (k x the rate at 1).
Targets: (a) <= 3 %, (b) >= 0.9 at 64.

    python benchmarks/sim_overhead.py [--delay 0.1] [--per-slot 4]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from trustee_rl.simulation import SimulateConfig, World, run_simulation
from trustee_rl.store import RunStore


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(delay: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trustee_rl.testing.openai_server",
            "--port",
            str(port),
            "--delay",
            str(delay),
            "--agent",
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(100):
        try:
            httpx.get(f"{url}/models", timeout=1)
            return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("loopback server did not start")


def run(url: str, episodes: int, concurrency: int, workdir: Path) -> tuple[float, float, int]:
    """(wall seconds, seconds inside LM calls summed over episodes, LM calls)."""
    config = SimulateConfig(
        episodes=episodes,
        seed=1,
        concurrency=concurrency,
        batch_size=episodes,
        policy=url,
        simulator=url,
    )
    run_dir = workdir / f"c{concurrency}_{time.monotonic_ns()}"
    store = RunStore.create(run_dir, config.model_dump(mode="json"))
    world = World.open(config)

    async def go() -> None:
        try:
            await run_simulation(config, store, world)
        finally:
            await world.close()

    started = time.perf_counter()
    asyncio.run(go())
    wall = time.perf_counter() - started
    stored = store.episodes()
    store.close()
    lm_time = sum(c.latency_s for e in stored for c in e.sim_calls) + sum(
        m.latency_s for e in stored for m in e.messages if m.role == "assistant"
    )
    calls = sum(len(e.sim_calls) for e in stored) + sum(
        1 for e in stored for m in e.messages if m.role == "assistant"
    )
    return wall, lm_time, calls


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--delay", type=float, default=0.1, help="seconds the server waits per call"
    )
    parser.add_argument("--per-slot", type=int, default=4, help="episodes per concurrent slot")
    args = parser.parse_args()
    process, url = start_server(args.delay)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            run(url, 2, 1, workdir)  # warm-up: imports, catalog, connections
            wall, lm_time, calls = run(url, 8, 1, workdir)
            outside = 1 - lm_time / wall
            print(f"server delay {args.delay:.3f} s per call")
            print(
                f"(a) one episode at a time: {8} episodes, {calls} LM calls, wall {wall:.2f} s, "
                f"inside LM calls {lm_time:.2f} s -> outside share {outside:.2%} (target <= 3%)"
            )
            base_rate = 8 / wall
            print("(b) concurrency  episodes  wall_s  episodes/s  ratio_to_ideal")
            for concurrency in (1, 4, 16, 64):
                episodes = concurrency * args.per_slot
                wall, _, _ = run(url, episodes, concurrency, workdir)
                rate = episodes / wall
                print(
                    f"    {concurrency:>11}  {episodes:>8}  {wall:6.2f}  {rate:10.2f}  "
                    f"{rate / (concurrency * base_rate):14.3f}"
                )
            print("target: ratio >= 0.9 at 64")
    finally:
        process.terminate()
        process.wait()


if __name__ == "__main__":
    main()
