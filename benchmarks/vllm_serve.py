"""How `trustee simulate` scales with concurrent episodes against one real vLLM server.

One vLLM server (its CPU build where there is no GPU) serves the embedded model, saved as training
saves a checkpoint, as both the policy and the simulator. The simulation engine then runs at 1, 4,
16 and 64 concurrent episodes (2 x concurrency episodes per level, at least 8), at a fixed
difficulty so every level plays tasks of one kind, and prints episodes/s and the ratio to the
ideal, concurrency x the rate at 1, measured in one run. Generated tokens/s are printed beside
them: episodes differ in length, tokens less so.

    python benchmarks/vllm_serve.py [--levels 1 4 16 64] [--checkpoint DIR] [--dtype auto]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from trustee_rl.curriculum import CurriculumConfig
from trustee_rl.lm.vllm_server import VLLMServer
from trustee_rl.simulation import SimulateConfig, World, run_simulation
from trustee_rl.store import RunStore


@dataclass
class Level:
    episodes: int
    scored: int
    wall_s: float
    completion_tokens: int

    @property
    def rate(self) -> float:
        return self.episodes / self.wall_s


def embedded_checkpoint(out: Path) -> Path:
    """The embedded model with the tool-aware chat template a trained checkpoint carries."""
    from trustee_rl.policy.model import load_policy, save_policy

    model, tokenizer = load_policy("embedded")
    return save_policy(model, tokenizer, out)


def run(url: str, concurrency: int, episodes: int, difficulty: float, workdir: Path) -> Level:
    config = SimulateConfig(
        episodes=episodes,
        seed=0,
        concurrency=concurrency,
        batch_size=episodes,
        policy=url,
        simulator=url,
        curriculum=CurriculumConfig(initial_level=difficulty, mode="fixed"),
    )
    store = RunStore.create(workdir / f"c{concurrency}", config.model_dump(mode="json"))
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
    scored = sum(1 for verdict in store.verdicts() if verdict.scored)
    store.close()
    tokens = sum(episode.usage.completion_tokens for episode in stored)
    return Level(len(stored), scored, wall, tokens)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument(
        "--checkpoint", type=Path, help="checkpoint dir to serve (default: the embedded model)"
    )
    parser.add_argument("--dtype", default="auto", help="vLLM's --dtype (auto: vLLM's choice)")
    parser.add_argument("--difficulty", type=float, default=30.0, help="fixed difficulty D")
    parser.add_argument(
        "--kv-cache-gib", type=float, default=4.0, help="KV cache of vLLM's CPU build"
    )
    parser.add_argument(
        "--log", type=Path, help="file for vLLM's output (default: a temporary file)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        checkpoint = args.checkpoint or embedded_checkpoint(workdir / "checkpoint")
        started = time.perf_counter()
        with VLLMServer(
            checkpoint, dtype=args.dtype, cpu_kv_cache_gib=args.kv_cache_gib, log_path=args.log
        ) as server:
            print(
                f"vLLM served {checkpoint} after {time.perf_counter() - started:.0f} s", flush=True
            )
            run(server.base_url, 1, 1, args.difficulty, workdir / "warm-up")
            print("concurrency  episodes  scored  wall_s  episodes/s  gen_tokens/s  ratio_to_ideal")
            base: float | None = None  # the rate at concurrency 1, once measured
            for k in sorted(args.levels):
                level = run(server.base_url, k, max(8, 2 * k), args.difficulty, workdir)
                base = level.rate if k == 1 else base
                ratio = f"{level.rate / (k * base):14.3f}" if base else f"{'n/a':>14}"
                print(
                    f"{k:>11}  {level.episodes:>8}  {level.scored:>6}  {level.wall_s:6.0f}  "
                    f"{level.rate:10.3f}  {level.completion_tokens / level.wall_s:12.1f}  {ratio}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
