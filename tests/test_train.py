"""`trustee train` end to end: the real SmolLM2 policy trained by TRL's GRPO, with a loopback
OpenAI-compatible server as the simulator so the test stays fast."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from trustee_rl.cli import app
from trustee_rl.store import RunStore
from trustee_rl.testing.openai_server import AgentResponder, LoopbackOpenAIServer
from trustee_rl.testing.tiny_train import TINY_TRAIN

pytestmark = pytest.mark.train


def settings(server: LoopbackOpenAIServer, steps: int) -> list[str]:
    args = []
    for item in [*TINY_TRAIN, f"steps={steps}", f"simulator={server.base_url}"]:
        args += ["--set", item]
    return args


@pytest.fixture
def server() -> Any:
    with LoopbackOpenAIServer(AgentResponder(seed=0)) as running:
        yield running


def test_train_runs_grpo_and_writes_a_loadable_checkpoint(
    server: LoopbackOpenAIServer, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--run-dir", str(run_dir), *settings(server, 2)])
    assert result.exit_code == 0, result.output
    with RunStore.open(run_dir, readonly=True) as store:
        stages = store.stages()
        assert list(stages) == ["base", "grpo"]
        assert all(
            stage.scores is not None and stage.scores.tasks == 2 for stage in stages.values()
        )
        assert len(store.heldout_tasks()) == 2
        heldout_domains = {task.domain for task in store.heldout_tasks()}
        assert heldout_domains.isdisjoint({task.domain for task in store.tasks()})
        assert [e.index for e in store.episodes()] == [0, 1, 2, 3]
        # A group's first episode keeps the simulator calls that wrote the group's task.
        taskgen = [any(call.role == "taskgen" for call in e.sim_calls) for e in store.episodes()]
        assert taskgen == [True, False, True, False]
        assert all(store.verdict(e.id) is not None for e in store.episodes())
        assert {step for step, _, _ in store.metrics()} == {0, 1}
        assert [step for step, _ in store.curriculum_states()] == [0, 1]
        names = {name for _, name, _ in store.metrics()}
    assert {
        "reward_mean",
        "difficulty",
        "loss",
        "step_time_s",
        "policy_s",
        "environment_s",
        "judge_s",
        "imitating_turns",
        "truncated_turns",
        "parse_errors",
        "calls_per_turn",
    } <= names
    assert (run_dir / "checkpoints" / "checkpoint-2").is_dir()
    assert any((run_dir / "tensorboard").rglob("events.out.tfevents.*"))

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(run_dir / "final")
    assert model.config.vocab_size > 0


def test_kill_9_mid_training_then_resume(server: LoopbackOpenAIServer, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "trustee_rl.cli",
        "train",
        "--run-dir",
        str(run_dir),
        *settings(server, 3),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if (run_dir / "checkpoints" / "checkpoint-1" / "trainer_state.json").exists():
            time.sleep(2)  # into step 2: its episodes may be stored, its checkpoint is not
            break
        time.sleep(0.5)
    assert process.poll() is None, "training ended before it could be interrupted"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    with RunStore.open(run_dir, readonly=True) as store:
        assert [e.index for e in store.episodes()] == list(range(6))
        assert list(store.stages()) == ["base", "grpo"]
        assert len(store.verdicts()) == 6
        assert [step for step, _ in store.curriculum_states()] == [0, 1, 2]
        steps = [step for step, name, _ in store.metrics() if name == "reward_mean"]
    assert steps == [0, 1, 2]
    assert (run_dir / "final" / "config.json").exists()


def test_the_control_arm_continues_the_warm_start_for_grpos_wall_time(
    server: LoopbackOpenAIServer, tmp_path: Path
) -> None:
    reference = tmp_path / "run"
    warm = [
        "warm_start.enabled=true",
        "warm_start.demos=2",
        "warm_start.max_attempts=8",
        "warm_start.batch_size=2",
        "taskgen.request_writer=template",
    ]
    args = settings(server, 1) + [arg for item in warm for arg in ("--set", item)]
    result = CliRunner().invoke(app, ["train", "--run-dir", str(reference), *args])
    assert result.exit_code == 0, result.output
    control = tmp_path / "control"
    result = CliRunner().invoke(
        app, ["train", "--control-of", str(reference), "--run-dir", str(control)]
    )
    assert result.exit_code == 0, result.output
    with RunStore.open(reference, readonly=True) as store:
        grpo_seconds = sum(v for _, name, v in store.metrics() if name == "step_time_s")
        reference_stages = store.stages()
        reference_tasks = store.heldout_tasks()
        reference_config = store.config
    with RunStore.open(control, readonly=True) as store:
        stages = store.stages()
        assert list(stages) == ["base", "warm_start", "control"]
        # The same policies on the same frozen tasks: their stage records are the reference's.
        assert store.heldout_tasks() == reference_tasks
        assert stages["warm_start"] == reference_stages["warm_start"]
        assert store.config == reference_config  # trained under the reference's settings
        trained = stages["control"].training
    scores = stages["control"].scores
    assert scores is not None and scores.tasks == 2
    # The supervised pass stops at the first step past GRPO's wall time.
    assert trained["warm_start_steps"] >= 1 and trained["wall_s"] >= grpo_seconds * 0.5
    assert (control / "final" / "config.json").is_file()


def test_a_control_needs_a_reference_with_grpo_and_a_warm_start(
    server: LoopbackOpenAIServer, tmp_path: Path
) -> None:
    reference = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--run-dir", str(reference), *settings(server, 1)])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(
        app, ["train", "--control-of", str(reference), "--run-dir", str(tmp_path / "control")]
    )
    assert result.exit_code != 0
    assert "has no warm_start/ checkpoint to continue from" in result.output
