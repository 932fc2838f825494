"""The GRPO plumbing: how a step's episodes become TRL's completions and rewards, and a real TRL
step on the embedded model whose update follows the reward."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from trustee_rl.policy.factory import open_transformers_policy
from trustee_rl.runner import Played
from trustee_rl.schema import Episode, Message, Verdict
from trustee_rl.train.grpo import simulated_reward
from trustee_rl.train.rollout import GroupStats, Trajectory, group_rewards
from trustee_rl.train.steps import prompt_slots, trajectory_order

from .conftest import make_task


def trajectory(index: int, reward: float | None, mask: list[int] | None = None) -> Trajectory:
    episode = Episode(id=f"ep_{index}", task_id="task_test", index=index, seed=1, policy_model="p")
    verdict = (
        Verdict(
            episode_id=episode.id,
            scored=True,
            reward=reward,
            judge_model="rules",
            prompt_version="r",
        )
        if reward is not None
        else Verdict.unscored(episode.id, "judge failed", "rules", "r")
    )
    return Trajectory(Played(make_task(), episode, verdict), [1, 2], [3, 4, 5], mask or [1, 0, 1])


def test_group_rewards_fill_unscored_episodes_with_their_group_mean_and_mask_them() -> None:
    group = [trajectory(0, 1.0), trajectory(1, None), trajectory(2, 0.0), trajectory(3, 0.5)]
    stats = GroupStats()
    rewards = group_rewards(group, group_size=4, stats=stats)
    assert rewards == [1.0, 0.5, 0.0, 0.5]
    assert group[1].env_mask == [0, 0, 0]  # teaches nothing
    assert group[0].env_mask == [1, 0, 1]
    assert (stats.groups, stats.unscored, stats.zero_variance) == (1, 1, 0)


def test_groups_without_reward_variance_are_counted_and_left_out_of_the_loss() -> None:
    trajectories = [trajectory(i, r) for i, r in enumerate([1.0, 1.0, 0.0, 1.0, None, None])]
    stats = GroupStats()
    group_rewards(trajectories, group_size=2, stats=stats)
    # [1, 1] and [None, None] carry no signal; [0, 1] does.
    assert (stats.groups, stats.zero_variance, stats.unscored) == (3, 2, 2)
    assert [t.env_mask for t in trajectories[:2]] == [[0, 0, 0], [0, 0, 0]]
    assert [t.env_mask for t in trajectories[2:4]] == [[1, 0, 1], [1, 0, 1]]


def test_trl_prompt_positions_map_to_their_group_members() -> None:
    # TRL repeats each slot's prompt once per group member ...
    repeated = ["slot-0", "slot-0", "slot-1", "slot-1"]
    slots = prompt_slots(repeated, group_size=2)
    assert slots == [(0, 2), (2, 2)]
    assert trajectory_order(slots, group_size=2) == [0, 1, 2, 3]
    # ... or hands one prompt per group and expects the whole group back.
    single = ["slot-0", "slot-1"]
    assert trajectory_order(prompt_slots(single, group_size=3), group_size=3) == list(range(6))
    # Identical neighbouring slots split at the group size, never merge across groups.
    assert prompt_slots(["a", "a", "a"], group_size=2) == [(0, 2), (2, 1)]


def sequence_logprob(
    model: Any, prompt: list[int], completion: list[int], mask: list[int]
) -> float:
    """Sum of the model's log-probabilities of the completion tokens with mask 1."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    picked = logprobs[torch.arange(len(completion)), torch.tensor(completion)]
    return float((picked * torch.tensor(mask, dtype=torch.float32)).sum())


@pytest.mark.train
def test_a_grpo_step_moves_log_probs_the_way_the_reward_points(tmp_path: Path) -> None:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(0)
    policy = open_transformers_policy("embedded")
    chat_format = policy.chat_format
    ledger = policy.new_ledger()
    prompt = ledger.start([Message(role="user", content="Check the weather in Oslo.")], [])
    end = chat_format.end_of_turn_id
    rewarded = [*chat_format.encode("Sure, one moment."), end]
    punished = [*chat_format.encode("No."), end]
    # An environment turn inside the completion (mask 0) must not be trained on.
    environment = chat_format.encode(
        "\n<|im_start|>user\nThanks<|im_end|>\n<|im_start|>assistant\n"
    )
    completions = [rewarded + environment + rewarded, punished + environment + punished]
    masks = [
        [1] * len(rewarded) + [0] * len(environment) + [1] * len(rewarded),
        [1] * len(punished) + [0] * len(environment) + [1] * len(punished),
    ]
    rewards = [1.0, -1.0]
    before = [
        sequence_logprob(policy.model, prompt, c, m)
        for c, m in zip(completions, masks, strict=True)
    ]
    weights = {name: p.detach().clone() for name, p in policy.model.named_parameters()}

    def rollout(prompts: list[Any], trainer: Any) -> dict[str, Any]:
        order = trajectory_order(prompt_slots(prompts, 2), 2)
        return {
            "prompt_ids": [prompt for _ in order],
            "completion_ids": [completions[i] for i in order],
            "logprobs": None,
            "env_mask": [masks[i] for i in order],
            "reward": [rewards[i] for i in order],
        }

    arguments = GRPOConfig(
        output_dir=str(tmp_path),
        learning_rate=2e-5,
        lr_scheduler_type="constant",
        beta=0.0,
        num_generations=2,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=1,
        max_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        max_completion_length=64,
        disable_tqdm=True,
        logging_steps=1,
    )
    trainer = GRPOTrainer(
        model=policy.model,
        reward_funcs=[simulated_reward],
        args=arguments,
        train_dataset=Dataset.from_list([{"prompt": "slot-0"}]),
        processing_class=policy.tokenizer,
        rollout_func=rollout,
    )
    trainer.train()
    model = trainer.model
    moved = [name for name, p in model.named_parameters() if not torch.equal(p, weights[name])]
    assert moved, "the GRPO step left every weight unchanged"
    after = [sequence_logprob(model, prompt, c, m) for c, m in zip(completions, masks, strict=True)]
    assert after[0] > before[0], "the rewarded reply became less likely"
    assert after[1] < before[1], "the punished reply became more likely"


def test_only_the_top_layers_train_when_asked() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from trustee_rl.train.grpo import train_top_layers

    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    train_top_layers(model, 1)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("model.layers.3.") for name in trainable)
    # A step changes the top layer and nothing below it.
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    ids = torch.randint(0, 64, (1, 8))
    model(input_ids=ids, labels=ids).loss.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable
    train_top_layers(model, None)  # None leaves the model as it is
    assert {name for name, p in model.named_parameters() if p.requires_grad} == trainable
