"""GRPO groups as the trainer sees them: episodes played in lockstep by the runner, turned into
token sequences and rewards.

Every episode of a group plays the same task against simulators seeded alike, so the group's
baseline compares policies, not simulator noise. The policy's sampled tokens are in each
episode's token ledger verbatim; environment turns are rendered once and masked out of the loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trustee_rl.policy.ledger import TokenLedger
from trustee_rl.policy.vllm import ColocatedEngine, ServerEngine, VLLMPolicy
from trustee_rl.runner import DrawnTask, EpisodeRunner, Played
from trustee_rl.schema import Task
from trustee_rl.seeding import derive_seed
from trustee_rl.train.config import TrainingRefused

if TYPE_CHECKING:
    from trustee_rl.policy.transformers import TransformersPolicy


@dataclass
class Trajectory:
    """One episode as the trainer sees it."""

    played: Played
    prompt_ids: list[int]
    completion_ids: list[int]
    env_mask: list[int]
    # The log-probability each completion token was sampled with, where the policy reports them.
    logprobs: list[float] | None = None

    @property
    def task(self) -> Task:
        assert self.played.task is not None  # a group is only played on a written task
        return self.played.task

    @property
    def reward(self) -> float | None:
        verdict = self.played.verdict
        return verdict.reward if verdict.scored else None


@dataclass
class GroupStats:
    groups: int = 0
    zero_variance: int = 0
    unscored: int = 0
    timings: dict[str, float] = field(default_factory=dict)


async def play_groups(
    runner: EpisodeRunner, tasks: list[DrawnTask], group_size: int, first_index: int, seed: int
) -> list[Trajectory]:
    """`group_size` episodes per task, all stepped together; episode ids are their run-wide
    indices, so a replayed step overwrites its own records. The first episode of a group keeps
    the simulator calls that wrote its task, as a simulated episode does."""
    envs = []
    for slot, drawn in enumerate(tasks):
        if drawn.task is None:
            raise ValueError(f"group {slot} has no task: {drawn.failure}")
        group_seed = derive_seed(seed, "group", drawn.task.id)  # shared by the whole group
        for member in range(group_size):
            index = first_index + slot * group_size + member
            env = runner.episode(
                drawn.task, index=index, seed=group_seed, episode_id=f"ep_{index:07d}"
            )
            if member == 0:
                env.episode.sim_calls = list(drawn.calls)
            envs.append(env)
    trajectories = []
    for played in await runner.play_lockstep(envs):
        ledger = played.ledger
        assert isinstance(ledger, TokenLedger)  # the trainer's runner always keeps ledgers
        trajectories.append(
            Trajectory(
                played,
                ledger.prompt_ids,
                ledger.completion_ids,
                ledger.completion_mask,
                ledger.sampling_logprobs,
            )
        )
    return trajectories


def group_rewards(
    trajectories: list[Trajectory], group_size: int, stats: GroupStats
) -> list[float]:
    """Rewards for the trainer, per trajectory. An unscored episode takes its group's scored mean
    (advantage ~0) and its loss mask is zeroed: it teaches nothing and skews no baseline. A group
    whose rewards are all equal has no advantage anywhere; its masks are zeroed too, so its tokens
    do not dilute the loss of the groups that carry a signal (TRL averages over unmasked tokens)."""
    rewards: list[float] = []
    for start in range(0, len(trajectories), group_size):
        group = trajectories[start : start + group_size]
        scored = [t.reward for t in group if t.reward is not None]
        stats.groups += 1
        stats.unscored += len(group) - len(scored)
        flat = len(set(scored)) <= 1
        stats.zero_variance += flat
        fill = sum(scored) / len(scored) if scored else 0.0
        for trajectory in group:
            if trajectory.reward is None or flat:
                trajectory.env_mask = [0] * len(trajectory.env_mask)
            rewards.append(fill if trajectory.reward is None else trajectory.reward)
    return rewards


def vllm_policy(generation: Any, policy: TransformersPolicy) -> VLLMPolicy:
    """`policy` sampled by TRL's vLLM engine (a GRPOTrainer's `vllm_generation`): the `vllm.LLM`
    it holds in colocate mode, its `VLLMClient` in server mode. TRL has the trained weights loaded
    into it before each rollout; chat format, caps, temperature and seeding are `policy`'s."""
    engine: ColocatedEngine | ServerEngine
    if generation.mode == "colocate":
        if generation.enable_sleep_mode:
            raise TrainingRefused("vllm_enable_sleep_mode is not supported with use_vllm")
        colocated = engine = ColocatedEngine(generation.llm)
        # TRL's colocate sync writes each tensor through vLLM's `model.load_weights`, which the
        # CPU backend cannot take (see `ColocatedEngine.load_weights`); the tensors are TRL's
        # own (adapters merged, names as vLLM reads them).
        generation.sync_weights = lambda: colocated.load_weights(generation._iter_named_params())
    else:
        client = getattr(generation, "vllm_client", None)
        if client is None:  # TRL connects the main process alone to the server
            raise TrainingRefused(
                "use_vllm in server mode trains in one process: TRL connects only the main "
                "process to the vLLM server"
            )
        engine = ServerEngine(client)
    return VLLMPolicy(
        engine,
        policy.tokenizer,
        name=policy.name,
        chat_format=policy.chat_format,
        max_new_tokens=policy.max_new_tokens,
        temperature=policy.generator.temperature,
        batch_sampling=policy.batch_sampling,
    )
