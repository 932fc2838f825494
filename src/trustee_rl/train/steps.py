"""TRL's rollout function: each GRPO step's groups played in simulated environments, stored, and
handed to the trainer as token sequences, masks and rewards; then the curriculum moves."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trustee_rl.curriculum import Curriculum, CurriculumState
from trustee_rl.runner import EpisodeRunner, TaskDrawer, Timings, advance_curriculum
from trustee_rl.sim.rules import IMITATION
from trustee_rl.sim.structured import SimulatorError
from trustee_rl.store import RunStore
from trustee_rl.train.config import TrainConfig, TrainingRefused
from trustee_rl.train.ranks import Ranks, StepResults
from trustee_rl.train.rollout import GroupStats, Trajectory, group_rewards, play_groups

# Groups of the first PROBE_STEPS rollouts decide whether the run has any reward signal.
PROBE_STEPS = 2


@dataclass
class StepContext:
    """What the recorder needs from the training run."""

    config: TrainConfig
    store: RunStore | None  # the main rank's; the other ranks send it what they play
    loop: asyncio.AbstractEventLoop
    report: Callable[[str], None]
    ranks: Ranks = field(default_factory=Ranks)


class StepRecorder:
    def __init__(
        self, context: StepContext, runner: EpisodeRunner, tasks: TaskDrawer, curriculum: Curriculum
    ) -> None:
        self.context = context
        self.runner = runner
        self.tasks = tasks
        self.curriculum = curriculum
        self.step_started = time.perf_counter()
        self.pending: dict[str, float] = {}
        self.probe = GroupStats()
        self.rollouts = 0

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, Any]:
        config = self.context.config
        step = int(trainer.state.global_step)
        self.step_started = time.perf_counter()
        slots = prompt_slots(prompts, config.group_size)
        stats = GroupStats()
        trajectories = self.context.loop.run_until_complete(self._play(step, len(slots)))
        rewards = group_rewards(trajectories, config.group_size, stats)
        self.curriculum.state = self.context.ranks.share_step(
            StepResults.of(trajectories, stats, self.runner.timings),
            lambda every_rank: self._record(step, every_rank),
        )
        order = trajectory_order(slots, config.group_size)
        logprobs = [trajectories[i].logprobs for i in order]
        return {
            "prompt_ids": [trajectories[i].prompt_ids for i in order],
            "completion_ids": [trajectories[i].completion_ids for i in order],
            # Aligned with completion_ids where the policy reports them (vLLM), for TRL's
            # importance-sampling correction; masked positions hold a placeholder.
            "logprobs": None if None in logprobs else logprobs,
            "env_mask": [trajectories[i].env_mask for i in order],
            "reward": [rewards[i] for i in order],
        }

    async def _play(self, step: int, groups: int) -> list[Trajectory]:
        # This rank's groups follow those of the ranks before it (see ranks.py).
        first_group = step * self.context.config.tasks_per_step + self.context.ranks.rank * groups
        tasks = []
        for slot in range(first_group, first_group + groups):
            drawn = await self.tasks.draw(slot)
            if drawn.task is None:
                raise SimulatorError(f"step {step}, group {slot}: {drawn.failure}")
            tasks.append(drawn)
        config = self.context.config
        first_index = first_group * config.group_size
        self.runner.timings = Timings()  # the split is per step
        return await play_groups(self.runner, tasks, config.group_size, first_index, config.seed)

    def _check_signal(self, stats: GroupStats) -> None:
        """Refuse a run whose first groups have no reward variance: GRPO would learn nothing."""
        self.rollouts += 1
        self.probe.groups += stats.groups
        self.probe.zero_variance += stats.zero_variance
        informative = self.probe.groups - self.probe.zero_variance
        wanted = self.context.config.min_informative_groups * self.probe.groups
        if self.rollouts == PROBE_STEPS and informative < wanted:
            raise TrainingRefused(
                f"{self.probe.zero_variance} of the first {self.probe.groups} groups have identical rewards: "
                "GRPO would get no signal. Enable the warm start, raise temperature or group_size, "
                "or lower the starting difficulty."
            )

    def _record(self, step: int, results: StepResults) -> CurriculumState:
        """Every rank's episodes of the step, stored in one transaction with the curriculum state
        they lead to (the main rank's work); returns that state."""
        self._check_signal(results.stats)
        trajectories = results.trajectories
        store = self.context.store
        assert store is not None  # only the main rank records, and it holds the store
        level = self.curriculum.level
        with store.transaction():
            for trajectory in trajectories:
                self.runner.record(trajectory.played)
            scored = advance_curriculum(
                self.curriculum, step, [(t.task, t.played.verdict) for t in trajectories], store
            )
        calls = [call for t in trajectories for call in t.played.episode.tool_calls]
        turns = [
            m for t in trajectories for m in t.played.episode.messages if m.role == "assistant"
        ]
        self.pending = {
            "reward_mean": sum(scored) / len(scored) if scored else math.nan,
            "difficulty": level,
            "scored": float(len(scored)),
            "zero_variance_groups": float(results.stats.zero_variance),
            "tool_calls_per_episode": len(calls) / max(len(trajectories), 1),
            "valid_call_share": sum(c.parse_error is None for c in calls) / max(len(calls), 1),
            # Reward-hacking signals: what a policy gaming the judge would do more of.
            "calls_per_turn": len(calls) / max(len(turns), 1),
            "parse_errors": float(sum(c.parse_error is not None for c in calls)),
            "imitating_turns": float(sum(bool(IMITATION.search(m.content or "")) for m in turns)),
            "truncated_turns": float(results.truncated_turns),
            **results.timings.as_dict(),
        }
        return self.curriculum.state

    def trainer_class(self) -> type[Any]:
        """TRL's GRPOTrainer whose log carries each step's metrics: every tracker TRL reports to
        (TensorBoard, W&B, trackio, ...) records them beside its own, and the run store gets
        them with TRL's loss and KL."""
        from trl import GRPOTrainer

        recorder = self

        class TrusteeGRPOTrainer(GRPOTrainer):  # type: ignore[misc]
            def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
                step_end = "loss" in logs  # TRL's other log calls (evaluation, the summary)
                if step_end:
                    logs.update(recorder.step_metrics())
                # TRL adds its metrics (KL, rewards) into `logs` before the trackers see them.
                super().log(logs, start_time)
                if step_end:
                    recorder.log_step(int(self.state.global_step) - 1, logs)

        return TrusteeGRPOTrainer

    def step_metrics(self) -> dict[str, float]:
        """The step's rollout metrics, and its time so far (rollout and update)."""
        return self.pending | {"step_time_s": time.perf_counter() - self.step_started}

    def log_step(self, step: int, logs: dict[str, Any]) -> None:
        if self.context.store is None:  # another rank: the main rank logs the step
            return
        names = [*self.pending, "step_time_s", "loss", "kl", "grad_norm", "learning_rate"]
        values = {
            name: float(logs[name]) for name in names if isinstance(logs.get(name), int | float)
        }
        self.context.store.log_metrics(step, values)
        self.context.report(
            f"step {step + 1}/{self.context.config.steps}  reward {values['reward_mean']:+.3f}  "
            f"D {values['difficulty']:.0f}  {values['step_time_s']:.1f}s"
        )


def prompt_slots(prompts: list[Any], group_size: int) -> list[tuple[int, int]]:
    """(first position, count) of each run of identical prompts; TRL repeats a prompt per group member."""
    runs: list[tuple[int, int]] = []
    for position, prompt in enumerate(prompts):
        if runs and prompts[runs[-1][0]] == prompt and runs[-1][1] < group_size:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((position, 1))
    return runs


def trajectory_order(slots: list[tuple[int, int]], group_size: int) -> list[int]:
    """Which trajectory answers each prompt position: a run of `group_size` copies takes the whole
    group; a single prompt expects `group_size` completions."""
    order: list[int] = []
    for slot, (_, count) in enumerate(slots):
        order += [
            slot * group_size + member for member in range(group_size if count == 1 else count)
        ]
    return order
