"""Rollouts for training: GRPO groups of episodes, generated token-in/token-out by the policy model.

Every episode of a group plays the same task against simulators seeded alike, so the group's
baseline compares policies, not simulator noise. The policy's sampled tokens go into a token ledger
verbatim; environment turns are rendered once and masked out of the loss.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from trustee_rl.curriculum import Curriculum
from trustee_rl.environment import Environment
from trustee_rl.episode import EpisodeEnv
from trustee_rl.policy.chat import ChatFormat
from trustee_rl.policy.ledger import TokenLedger
from trustee_rl.schema import Episode, SimCall, Task, Verdict
from trustee_rl.seeding import derive_rng, derive_seed


@dataclass
class Trajectory:
    """One episode as the trainer sees it."""

    task: Task
    episode: Episode
    verdict: Verdict
    prompt_ids: list[int]
    completion_ids: list[int]
    env_mask: list[int]

    @property
    def reward(self) -> float | None:
        return self.verdict.reward if self.verdict.scored else None


@dataclass
class GroupStats:
    groups: int = 0
    zero_variance: int = 0
    unscored: int = 0
    task_failures: int = 0
    timings: dict[str, float] = field(
        default_factory=lambda: {"policy_s": 0.0, "environment_s": 0.0, "judge_s": 0.0}
    )


@dataclass
class Generator:
    """Batched sampling from a causal LM on token ids; each row stops at an end-of-turn token."""

    model: Any
    pad_id: int
    stop_ids: list[int]
    temperature: float

    @torch.no_grad()
    def __call__(
        self, contexts: list[list[int]], max_new_tokens: int, prefix_cache: Any = None
    ) -> list[list[int]]:
        """`prefix_cache`: the model's KV cache of an opening the context starts with (a batch of
        one), so only what follows the opening is computed; generation extends it in place."""
        if prefix_cache is not None and len(contexts) != 1:
            raise ValueError("a prefix cache serves a batch of one context")
        width = max(len(ids) for ids in contexts)
        input_ids = torch.full((len(contexts), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(contexts), width), dtype=torch.long)
        for row, ids in enumerate(contexts):  # left padding keeps every row's last token aligned
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention[row, width - len(ids) :] = 1
        was_training = self.model.training
        self.model.eval()
        try:
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention,
                max_new_tokens=max_new_tokens,
                do_sample=self.temperature > 0,
                temperature=self.temperature if self.temperature > 0 else None,
                top_p=1.0,
                eos_token_id=self.stop_ids,
                pad_token_id=self.pad_id,
                use_cache=True,
                past_key_values=prefix_cache,
            )
        finally:
            self.model.train(was_training)
        return [self._trim(row[width:].tolist()) for row in output]

    def _trim(self, ids: list[int]) -> list[int]:
        for position, token in enumerate(ids):
            if token in self.stop_ids:
                return ids[: position + 1]
        return ids


class GroupRollout:
    """Runs GRPO groups: tasks from the curriculum, `group_size` episodes each, stepped in lockstep
    so every policy turn across all live episodes is one batched generation."""

    def __init__(
        self,
        environment: Environment,
        curriculum: Curriculum,
        generator: Generator,
        tokenizer: Any,
        chat_format: ChatFormat,
        *,
        seed: int,
        group_size: int,
        max_turn_tokens: int,
        max_episode_tokens: int,
        policy_model: str,
    ) -> None:
        self.environment = environment
        self.curriculum = curriculum
        self.generate = generator
        self.tokenizer = tokenizer
        self.chat_format = chat_format
        self.seed = seed
        self.group_size = group_size
        self.max_turn_tokens = max_turn_tokens
        self.max_episode_tokens = max_episode_tokens
        self.policy_model = policy_model

    async def make_task(self, step: int, slot: int, log: list[SimCall]) -> Task:
        """The task of group `slot` at `step`: a pure function of (run seed, step, slot, D)."""
        difficulty = self.curriculum.sample(derive_rng(self.seed, "train-difficulty", step, slot))
        return await self.environment.task(
            difficulty, derive_seed(self.seed, "train-task", step, slot), log
        )

    async def run(self, tasks: list[Task], first_index: int, stats: GroupStats) -> list[Trajectory]:
        envs: list[EpisodeEnv] = []
        for slot, task in enumerate(tasks):
            group_seed = derive_seed(self.seed, "group", task.id)  # shared by the whole group
            for member in range(self.group_size):
                index = first_index + slot * self.group_size + member
                envs.append(
                    self.environment.episode(
                        task, index=index, seed=group_seed, policy_model=self.policy_model
                    )
                )
                envs[-1].episode.id = f"ep_{index:07d}"
        ledgers = [TokenLedger(self.tokenizer, self.chat_format) for _ in envs]
        contexts = [
            ledger.start(env.reset(), env.task.tools)
            for env, ledger in zip(envs, ledgers, strict=True)
        ]
        live = list(range(len(envs)))
        while live:
            budgets = [self.max_episode_tokens - ledgers[i].num_policy_tokens for i in live]
            started = time.perf_counter()
            sampled = self.generate(
                [contexts[i] for i in live], min(self.max_turn_tokens, max(budgets))
            )
            stats.timings["policy_s"] += time.perf_counter() - started
            started = time.perf_counter()
            replies = [
                ledgers[i].add_policy_turn(ids[:budget])
                for i, ids, budget in zip(live, sampled, budgets, strict=True)
            ]
            results = await asyncio.gather(
                *(envs[i].step(reply) for i, reply in zip(live, replies, strict=True))
            )
            stats.timings["environment_s"] += time.perf_counter() - started
            still_live = []
            for i, result in zip(live, results, strict=True):
                if result.done:
                    continue
                if ledgers[i].num_policy_tokens >= self.max_episode_tokens:
                    envs[i].stop("token_budget")
                    continue
                contexts[i] = ledgers[i].add_environment(result.messages)
                still_live.append(i)
            live = still_live
        started = time.perf_counter()
        verdicts = await asyncio.gather(*(env.finish() for env in envs))
        stats.timings["judge_s"] += time.perf_counter() - started
        return [
            Trajectory(
                env.task,
                env.episode,
                verdict,
                ledger.prompt_ids,
                ledger.completion_ids,
                ledger.completion_mask,
            )
            for env, verdict, ledger in zip(envs, verdicts, ledgers, strict=True)
        ]


def group_rewards(
    trajectories: list[Trajectory], group_size: int, stats: GroupStats
) -> list[float]:
    """Rewards for the trainer, per trajectory. An unscored episode takes its group's scored mean
    (advantage ~0) and its loss mask is zeroed: it teaches nothing and skews no baseline."""
    rewards: list[float] = []
    for start in range(0, len(trajectories), group_size):
        group = trajectories[start : start + group_size]
        scored = [t.reward for t in group if t.reward is not None]
        stats.groups += 1
        stats.unscored += len(group) - len(scored)
        if len(set(scored)) <= 1:
            stats.zero_variance += 1
        fill = sum(scored) / len(scored) if scored else 0.0
        for trajectory in group:
            if trajectory.reward is None:
                trajectory.env_mask = [0] * len(trajectory.env_mask)
            rewards.append(fill if trajectory.reward is None else trajectory.reward)
    return rewards


def finite_mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan
