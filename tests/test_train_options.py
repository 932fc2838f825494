"""The GPU-path training options, exercised on the CPU: where the policy comes from (a checkpoint
dir, or a hub id that may have to stay offline), a LoRA adapter trained by a real GRPO step and
saved merged beside it, and trustee's step metrics reaching the trackers TRL reports to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from trustee_rl.cli import app
from trustee_rl.policy.model import embedded_checkpoint, load_policy
from trustee_rl.store import RunStore
from trustee_rl.testing.openai_server import AgentResponder, LoopbackOpenAIServer
from trustee_rl.testing.tiny_train import TINY_TRAIN, set_options
from trustee_rl.train.config import LoraConfig, TrainingRefused
from trustee_rl.train.grpo import simulated_reward
from trustee_rl.train.lora import adapter_dir, check_qlora_support, save_merged, with_adapter
from trustee_rl.train.steps import prompt_slots, trajectory_order

MISSING_HUB_MODEL = "no-such-org/no-such-model"


def tiny_checkpoint(out: Path) -> Path:
    """A two-layer random Llama with the embedded model's tokenizer, saved as an HF checkpoint."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(embedded_checkpoint(), local_files_only=True)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_a_checkpoint_dir_loads_even_when_offline_is_asked(tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "tiny")
    model, tokenizer = load_policy(str(checkpoint), offline=True)
    assert model.config.num_hidden_layers == 2 and model.dtype == torch.float32
    assert tokenizer.eos_token is not None


def test_a_hub_id_missing_offline_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # Asked for by the setting, then by the environment variable; the hub is never reached,
    # since offline means the local cache only.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(ValueError) as by_setting:
        load_policy(MISSING_HUB_MODEL, offline=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError) as by_variable:
        load_policy(MISSING_HUB_MODEL)
    for error in (by_setting.value, by_variable.value):
        message = str(error)
        assert "\n" not in message and MISSING_HUB_MODEL in message
        assert "not in the local Hugging Face cache" in message


def test_train_refuses_a_missing_hub_policy_in_one_line(tmp_path: Path) -> None:
    with LoopbackOpenAIServer(AgentResponder(seed=0)) as server:
        result = CliRunner().invoke(
            app,
            [
                "train",
                "--run-dir",
                str(tmp_path / "run"),
                *("--set", f"policy={MISSING_HUB_MODEL}"),
                *("--set", "hub_offline=true"),
                *("--set", f"simulator={server.base_url}"),
            ],
        )
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and MISSING_HUB_MODEL in result.output
    assert not server.requests  # refused before any task was drawn


def test_qlora_is_refused_in_one_line_where_cuda_or_bitsandbytes_is_missing(
    tmp_path: Path,
) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal is for machines without it")
    with pytest.raises(TrainingRefused, match=r"lora\.qlora needs CUDA"):
        check_qlora_support(LoraConfig(enabled=True, qlora=True))
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--run-dir",
            str(tmp_path / "run"),
            *("--set", "lora.enabled=true"),
            *("--set", "lora.qlora=true"),
        ],
    )
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "lora.qlora needs CUDA" in result.output
    assert not (tmp_path / "run").exists()  # nothing was stored


def logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits  # type: ignore[no-any-return]


def test_a_lora_grpo_step_trains_only_the_adapter_and_saves_it_merged(tmp_path: Path) -> None:
    from datasets import Dataset
    from peft import PeftModel
    from trl import GRPOConfig, GRPOTrainer

    from trustee_rl.policy.factory import open_transformers_policy

    torch.manual_seed(0)
    policy = open_transformers_policy("embedded")
    base = {name: p.detach().clone() for name, p in policy.model.named_parameters()}
    model = with_adapter(
        policy.model, LoraConfig(enabled=True, r=4, alpha=8, dropout=0.0), 2, False
    )
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    layers = model.config.num_hidden_layers
    assert {name.split(".layers.")[1].split(".")[0] for name in trainable} == {
        str(layers - 2),
        str(layers - 1),
    }
    chat_format = policy.chat_format
    prompt = chat_format.encode("<|im_start|>user\nCheck the weather in Oslo.<|im_end|>\n")
    end = chat_format.end_of_turn_id
    completions = [
        [*chat_format.encode("Sure, one moment."), end],
        [*chat_format.encode("No."), end],
    ]

    def rollout(prompts: list[Any], trainer: Any) -> dict[str, Any]:
        order = trajectory_order(prompt_slots(prompts, 2), 2)
        return {
            "prompt_ids": [prompt for _ in order],
            "completion_ids": [completions[i] for i in order],
            "logprobs": None,
            "reward": [[1.0, -1.0][i] for i in order],
        }

    arguments = GRPOConfig(
        output_dir=str(tmp_path / "trainer"),
        learning_rate=1e-3,
        beta=0.0,
        num_generations=2,
        per_device_train_batch_size=2,
        max_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,  # TRL's default; on a CPU, float32 throughout
        max_completion_length=16,
        disable_tqdm=True,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[simulated_reward],
        args=arguments,
        train_dataset=Dataset.from_list([{"prompt": "slot-0"}]),
        processing_class=policy.tokenizer,
        rollout_func=rollout,
    )
    trainer.train()
    model = trainer.model
    assert isinstance(model, PeftModel)
    moved = {
        name
        for name, p in model.named_parameters()
        if name in trainable and "lora_B" in name and p.abs().sum() > 0
    }
    assert moved, "the step left every adapter weight at its start"
    with model.disable_adapter():  # the base under the adapter is as it was loaded
        for name, p in model.get_base_model().named_parameters():
            if "lora_" not in name:
                assert torch.equal(p, base[name.replace(".base_layer", "")]), name

    ids = torch.tensor([prompt + completions[0]])
    adapted = logits(model, ids)
    final = tmp_path / "final"
    save_merged(model, policy.tokenizer, final, chat_format)
    assert not (final / "adapter_config.json").exists()  # a plain checkpoint, as vLLM wants
    assert (adapter_dir(final) / "adapter_config.json").is_file()
    merged, _ = load_policy(str(final))
    assert torch.allclose(logits(merged, ids), adapted, atol=1e-4)
    reloaded = PeftModel.from_pretrained(load_policy("embedded")[0], adapter_dir(final))
    assert torch.allclose(logits(reloaded, ids), adapted, atol=1e-4)


def test_trustee_metrics_reach_tensorboard_and_a_lora_run_ends_merged(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import (  # type: ignore[import-untyped]
        EventAccumulator,
    )

    run_dir = tmp_path / "run"
    tiny = [
        *TINY_TRAIN,
        "steps=1",
        "eval.tasks=1",
        "eval.reply_tokens=8",
        "trainable_layers=1",
        "lora.enabled=true",
        "lora.r=2",
        "trl.report_to=[tensorboard]",
    ]
    with LoopbackOpenAIServer(AgentResponder(seed=0)) as server:
        settings = [*tiny, f"simulator={server.base_url}"]
        result = CliRunner().invoke(
            app, ["train", "--run-dir", str(run_dir), *set_options(settings)]
        )
    assert result.exit_code == 0, result.output
    [events] = list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    trustee_metrics = {
        "difficulty",
        "reward_mean",
        "zero_variance_groups",
        "step_time_s",
        "policy_s",
        "environment_s",
        "judge_s",
        "calls_per_turn",
        "parse_errors",
        "imitating_turns",
    }
    assert {f"train/{name}" for name in trustee_metrics | {"loss"}} <= tags
    with RunStore.open(run_dir, readonly=True) as store:
        stored = {name for _, name, _ in store.metrics()}
        assert list(store.stages()) == ["base", "grpo"]  # scored with the adapter, then merged
    assert trustee_metrics | {"loss"} <= stored
    assert (run_dir / "final" / "config.json").is_file()
    assert not (run_dir / "final" / "adapter_config.json").exists()
    assert (adapter_dir(run_dir / "final") / "adapter_model.safetensors").is_file()


def test_train_on_a_task_file_plays_its_tasks_in_turn(tmp_path: Path) -> None:
    from trustee_rl.task_files import write_task_file

    from .conftest import make_task

    file_tasks = [make_task(id=f"file_task_{i}", strictness=1) for i in range(3)]
    write_task_file(tmp_path / "tasks.jsonl", file_tasks)
    run_dir = tmp_path / "run"
    tiny = [*TINY_TRAIN, "steps=2", "eval.tasks=0", "trainable_layers=1"]
    with LoopbackOpenAIServer(AgentResponder(seed=0)) as server:
        settings = [*tiny, f"simulator={server.base_url}"]
        result = CliRunner().invoke(
            app,
            [
                "train",
                "--run-dir",
                str(run_dir),
                "--tasks",
                str(tmp_path / "tasks.jsonl"),
                *set_options(settings),
            ],
        )
    assert result.exit_code == 0, result.output
    with RunStore.open(run_dir, readonly=True) as store:
        played = [episode.task_id for episode in store.episodes()]
    # Step 0 plays the file's first task, step 1 its second: a group per step, two members each.
    assert sorted(played) == ["file_task_0", "file_task_0", "file_task_1", "file_task_1"]


def test_train_refuses_a_task_file_that_holds_no_tasks(tmp_path: Path) -> None:
    bad = tmp_path / "tasks.jsonl"
    bad.write_text('{"id": "x"}\n', encoding="utf-8")
    result = CliRunner().invoke(
        app, ["train", "--run-dir", str(tmp_path / "run"), "--tasks", str(bad)]
    )
    assert result.exit_code == 2
    assert "line 1: not a task" in result.output.strip().splitlines()[-1]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--set", "tasks_per_step=3"], "tasks_per_step 3 does not split over 2 processes"),
        (["--set", "micro_batch_size=3"], "micro_batch_size 3 does not divide the 4 episodes"),
        (["--set", "warm_start.batch_size=3"], "warm_start.batch_size 3 does not split over 2"),
    ],
)
def test_a_run_that_does_not_split_over_the_processes_is_refused_before_anything_is_stored(
    options: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")  # as a launcher sets it: refused before it is joined
    result = CliRunner().invoke(app, ["train", "--run-dir", str(tmp_path / "run"), *options])
    assert result.exit_code == 2
    assert message in result.output.strip().splitlines()[-1]
    assert not (tmp_path / "run").exists()
