from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustee_rl.cli import app
from trustee_rl.policy.model import native_bf16
from trustee_rl.train.config import load_train_config


def test_presets_load_and_paper_matches_the_reported_setup() -> None:
    cpu = load_train_config("cpu")
    assert (cpu.policy, cpu.simulator, cpu.warm_start.enabled) == ("embedded", "embedded", True)
    # "auto" (every preset's): on where the machine computes bf16 natively.
    assert cpu.bf16 is native_bf16()
    assert load_train_config("cpu", overrides=["bf16=false"]).bf16 is False
    paper = load_train_config("paper")
    assert paper.learning_rate == 1e-6 and paper.steps == 200
    assert (paper.tasks_per_step, paper.group_size, paper.kl_beta, paper.clip_epsilon) == (
        16,
        8,
        0.001,
        0.2,
    )
    # The rollout generates with the policy in-process: TRL's vLLM generation stays off.
    assert not paper.use_vllm and not paper.warm_start.enabled
    assert paper.policy == "Qwen/Qwen3-8B" and paper.trl["report_to"] == ["tensorboard"]
    smoke = load_train_config("gpu-smoke")
    assert smoke.policy == "Qwen/Qwen3-0.6B" and smoke.lora.enabled and smoke.bf16
    assert not smoke.lora.qlora and not smoke.hub_offline
    assert not cpu.lora.enabled and not cpu.trl and not cpu.warm_start.trl


def test_trl_sections_reach_the_trainer_arguments(tmp_path: Path) -> None:
    from trl import GRPOConfig

    from trustee_rl.train.config import GRPO_SET_BY_TRUSTEE
    from trustee_rl.train.grpo import grpo_arguments

    config = load_train_config(
        "cpu",
        overrides=[
            "trl.loss_type=dr_grpo",
            "trl.scale_rewards=none",
            "trl.vllm_importance_sampling_correction=false",
            "kl_beta=0.01",
        ],
    )
    arguments = grpo_arguments(config, tmp_path)
    # Every field trustee refuses in `trl:` is one it sets itself, and no other.
    decided = set(arguments) - {"lr_scheduler_type", "report_to", "disable_tqdm"} - set(config.trl)
    assert decided == set(GRPO_SET_BY_TRUSTEE)
    built = GRPOConfig(**arguments)
    assert (built.loss_type, built.scale_rewards, built.beta) == ("dr_grpo", "none", 0.01)
    assert built.report_to == ["tensorboard"] and not built.vllm_importance_sampling_correction
    assert built.steps_per_generation == built.gradient_accumulation_steps  # one rollout a step


def test_file_then_overrides_win(tmp_path: Path) -> None:
    config_file = tmp_path / "c.yaml"
    config_file.write_text("steps: 5\nwarm_start:\n  demos: 3\n")
    config = load_train_config(
        "cpu", config_file, ["steps=7", "judge.reward=levels", "temperature=0.5"]
    )
    assert config.steps == 7 and config.warm_start.demos == 3 and config.warm_start.epochs == 1
    assert config.judge.reward == "levels" and config.temperature == 0.5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "gpu9000"], "unknown preset"),
        (["--set", "steps"], "expected key=value"),
        (["--set", "steps=-1"], "steps"),
        (["--set", "no_such_setting=1"], "no_such_setting"),
        (["--set", "trl.no_such_field=1"], "trl.no_such_field: GRPOConfig has no such field"),
        (["--set", "trl.beta=0.1"], "trl.beta is set by trustee: use kl_beta"),
        (
            ["--set", "warm_start.trl.learning_rate=1"],
            "warm_start.trl.learning_rate is set by trustee: use warm_start.learning_rate",
        ),
        (["--set", "warm_start.trl.nope=1"], "SFTConfig has no such field"),
        (["--set", "lora.r=0"], "lora.r"),
    ],
)
def test_bad_settings_are_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["train", "--run-dir", str(tmp_path / "run"), *args])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and message in result.output
    assert not (tmp_path / "run").exists()


def test_malformed_yaml_is_a_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1,\n")
    result = CliRunner().invoke(
        app, ["train", "--run-dir", str(tmp_path / "run"), "--config", str(bad)]
    )
    assert result.exit_code == 2 and result.output.startswith("error: config")


def test_resume_needs_a_run_and_a_run_needs_resume(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", "--run-dir", str(tmp_path / "none"), "--resume"])
    assert result.exit_code == 2 and "no run to resume" in result.output
