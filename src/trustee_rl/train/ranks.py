"""Training over several processes (`accelerate launch`, `torchrun`): who plays what, who writes.

Every process (rank) holds a copy of the policy and plays its own share of each GRPO step. TRL hands
rank r the r-th slice of the step's prompts, so rank r plays the step's groups
[r * share, (r + 1) * share), with the task keys and episode indices one process would give them:
the episodes are disjoint across ranks, and a resume replays the same ones whatever the number of
processes.

Rank 0 (the main rank) is the run store's only writer. The other ranks send it what they played; it
records the whole step in one transaction, moves the curriculum with every rank's results and sends
the new state back, so all ranks draw the next step's tasks from one curriculum. Held-out scores and
checkpoints are the main rank's alone; the warm start's demonstrations are collected there and
trained on by every rank, each on its share.

Object collectives travel over a gloo group of their own, whatever the backend of the gradients,
with a long timeout: the other ranks wait there while the main rank scores held-out tasks.
In one process, `Ranks()` does nothing.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from trustee_rl.curriculum import CurriculumState
from trustee_rl.policy.ledger import TokenLedger
from trustee_rl.runner import Timings
from trustee_rl.train.config import TrainConfig, TrainingRefused, WarmStartConfig
from trustee_rl.train.rollout import GroupStats, Trajectory

T = TypeVar("T")

# How long the other ranks may wait on the main rank (held-out scoring, collecting demonstrations).
MAIN_RANK_WAIT = timedelta(hours=12)


def launched_processes() -> int:
    """How many processes the launcher started (WORLD_SIZE; 1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    group: Any = None  # the gloo process group object collectives use; None in one process

    @classmethod
    def start(cls) -> Ranks:
        """This process's place among the launched ones; joins the process group accelerate sets
        up (gloo on CPUs, NCCL on GPUs), which TRL's trainer then uses for the gradients."""
        if launched_processes() == 1:
            return cls()
        import torch
        import torch.distributed as dist
        from accelerate import PartialState  # type: ignore[import-untyped]

        state = PartialState(cpu=not torch.cuda.is_available())
        group = dist.new_group(backend="gloo", timeout=MAIN_RANK_WAIT)
        return cls(state.process_index, state.num_processes, group)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def from_main(self, compute: Callable[[], T]) -> T:
        """`compute()` run on the main rank; every rank gets its result."""
        if self.world_size == 1:
            return compute()
        import torch.distributed as dist

        box = [compute() if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]  # type: ignore[return-value]

    def gather(self, value: T) -> list[T]:
        """Every rank's `value`, in rank order, on the main rank; an empty list on the others."""
        if self.world_size == 1:
            return [value]
        import torch.distributed as dist

        gathered: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(value, gathered, dst=0, group=self.group)
        return gathered or []

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier(group=self.group)

    def share_step(
        self, results: StepResults, record: Callable[[StepResults], CurriculumState]
    ) -> CurriculumState:
        """The step's results of every rank, merged in rank order, are recorded by `record` on the
        main rank; the curriculum state it returns reaches every rank. A refusal there is raised
        on every rank, so no rank waits on one that stopped."""
        gathered = self.gather(results)

        def outcome() -> CurriculumState | str:
            try:
                return record(StepResults.merge(gathered))
            except TrainingRefused as refusal:
                return str(refusal)

        shared = self.from_main(outcome)
        if isinstance(shared, str):
            raise TrainingRefused(shared)
        return shared


@dataclass
class StepResults:
    """What a rank played in one step, as the store and the curriculum take it. The trajectories
    travel without their token ledgers (each holds a tokenizer); the ledgers' count of truncated
    turns travels instead."""

    trajectories: list[Trajectory]
    truncated_turns: int
    stats: GroupStats
    timings: Timings

    @classmethod
    def of(cls, trajectories: list[Trajectory], stats: GroupStats, timings: Timings) -> StepResults:
        ledgers = [t.played.ledger for t in trajectories]
        return cls(
            [
                dataclasses.replace(t, played=dataclasses.replace(t.played, ledger=None))
                for t in trajectories
            ],
            sum(ledger.truncated_turns for ledger in ledgers if isinstance(ledger, TokenLedger)),
            stats,
            timings,
        )

    @classmethod
    def merge(cls, shares: list[StepResults]) -> StepResults:
        """The ranks' shares, in rank order: the step's episodes in index order. Its time split
        is the slowest rank's, the one the step waited for."""
        return cls(
            [t for share in shares for t in share.trajectories],
            sum(share.truncated_turns for share in shares),
            GroupStats(
                groups=sum(share.stats.groups for share in shares),
                zero_variance=sum(share.stats.zero_variance for share in shares),
                unscored=sum(share.stats.unscored for share in shares),
            ),
            Timings(
                **{
                    name: max(getattr(share.timings, name) for share in shares)
                    for name in Timings().as_dict()
                }
            ),
        )


def check_split(config: TrainConfig, processes: int, *, control: bool) -> None:
    """Refuse, before anything is stored, a run that does not split evenly over `processes`:
    each rank plays whole groups in whole micro-batches, and trains on a whole share of each
    warm-start batch."""
    if processes == 1:
        return
    if control:
        raise TrainingRefused(
            "the control arm (--control-of) trains in one process: run it without accelerate "
            "launch or torchrun"
        )
    if config.tasks_per_step % processes:
        raise TrainingRefused(
            f"tasks_per_step {config.tasks_per_step} does not split over {processes} processes: "
            f"make it a multiple of {processes}, so that each plays whole groups"
        )
    episodes = config.tasks_per_step // processes * config.group_size
    if episodes % config.micro_batch_size:
        raise TrainingRefused(
            f"micro_batch_size {config.micro_batch_size} does not divide the {episodes} episodes "
            f"each of {processes} processes plays per step"
        )
    warm = config.warm_start
    if not warm.enabled:
        return
    share = warm.batch_size // processes
    if warm.batch_size % processes or share % min(warm.micro_batch_size or share, share):
        raise TrainingRefused(
            f"warm_start.batch_size {warm.batch_size} does not split over {processes} processes "
            f"in micro-batches of {warm.micro_batch_size}: make it a multiple of "
            f"{processes * (warm.micro_batch_size or 1)}"
        )


def warm_start_share(config: WarmStartConfig, processes: int) -> WarmStartConfig:
    """The warm start as one of `processes` ranks runs it: a share of each batch, so that the
    ranks together take the configured batch per optimiser step (see `check_split`)."""
    if processes == 1:
        return config
    share = config.batch_size // processes
    return config.model_copy(
        update={
            "batch_size": share,
            "micro_batch_size": min(config.micro_batch_size or share, share),
        }
    )
