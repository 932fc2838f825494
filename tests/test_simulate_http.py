"""The whole loop over real HTTP: `trustee simulate` against a loopback OpenAI-compatible server."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
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

runner = CliRunner()


def simulate(server: LoopbackOpenAIServer, run_dir: Path, *extra: str) -> Any:
    args = [
        "simulate",
        "--run-dir",
        str(run_dir),
        "--policy",
        server.base_url,
        "--simulator",
        server.base_url,
        "--json",
        *extra,
    ]
    return runner.invoke(app, args)


def replayable(run_dir: Path) -> list[Any]:
    """Everything a replay must reproduce, without timings."""
    with RunStore.open(run_dir) as store:
        tasks = sorted((t.model_dump(mode="json") for t in store.tasks()), key=lambda t: t["id"])
        episodes = []
        for episode in store.episodes():
            messages = [m.model_dump(mode="json", exclude={"latency_s"}) for m in episode.messages]
            episodes.append((episode.index, episode.end_reason, messages))
        verdicts = [v.model_dump(mode="json") for v in store.verdicts()]
    return [tasks, episodes, verdicts]


@pytest.fixture
def server() -> Any:
    with LoopbackOpenAIServer(AgentResponder(seed=0)) as running:
        yield running


def test_full_loop_over_http_with_response_format(
    server: LoopbackOpenAIServer, tmp_path: Path
) -> None:
    result = simulate(server, tmp_path / "run", "--episodes", "4", "--seed", "3", "--judge", "lm")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["episodes"] == 4
    assert summary["scored"] + summary["unscored"] == 4
    assert summary["simulator_calls"] > 0 and summary["prompt_tokens"] > 0

    structured = [r for r in server.requests if "response_format" in r]
    assert structured and all(r["response_format"]["type"] == "json_schema" for r in structured)
    assert any(r.get("tools") for r in server.requests)  # the policy used native tool calling

    with RunStore.open(tmp_path / "run") as store:
        episodes = store.episodes()
        roles = {call.role for episode in episodes for call in episode.sim_calls}
        assert {"taskgen", "judge"} <= roles
        for episode in episodes:
            verdict = store.verdict(episode.id)
            assert verdict is not None
            assert verdict.scored == (verdict.reward is not None)
            assert verdict.scored or verdict.unscored_reason
            assert store.task(episode.task_id).id == episode.task_id
            # each tool result answers a call the policy made in the turn before
            call_ids = {c.id for c in episode.tool_calls}
            assert all(m.tool_call_id in call_ids for m in episode.messages if m.role == "tool")


def test_same_seed_gives_identical_tasks_tool_results_and_verdicts(
    server: LoopbackOpenAIServer, tmp_path: Path
) -> None:
    for name in ("a", "b"):
        result = simulate(
            server, tmp_path / name, "--episodes", "4", "--seed", "11", "--concurrency", "4"
        )
        assert result.exit_code == 0, result.output
    first, second = replayable(tmp_path / "a"), replayable(tmp_path / "b")
    assert first == second
    assert any(m["role"] == "tool" for _, _, messages in first[1] for m in messages)
    other = simulate(server, tmp_path / "c", "--episodes", "4", "--seed", "12")
    assert other.exit_code == 0
    assert replayable(tmp_path / "c")[0] != first[0]


def test_rerun_on_same_dir_resumes_without_duplicates(
    server: LoopbackOpenAIServer, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    assert simulate(server, run_dir, "--episodes", "3", "--seed", "5").exit_code == 0
    before = replayable(run_dir)
    result = simulate(server, run_dir, "--episodes", "5", "--seed", "5")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["resumed"] is True
    with RunStore.open(run_dir) as store:
        assert [e.index for e in store.episodes()] == [0, 1, 2, 3, 4]
    after = replayable(run_dir)
    assert after[1][:3] == before[1]
    changed_seed = simulate(server, run_dir, "--episodes", "5", "--seed", "6")
    assert changed_seed.exit_code == 2 and "seed" in changed_seed.output


def test_kill_9_mid_run_then_resume_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with LoopbackOpenAIServer(AgentResponder(seed=0), delay_s=0.05) as server:
        command = [
            sys.executable,
            "-m",
            "trustee_rl.cli",
            "simulate",
            "--run-dir",
            str(run_dir),
            "--episodes",
            "12",
            "--seed",
            "2",
            "--concurrency",
            "2",
            "--policy",
            server.base_url,
            "--simulator",
            server.base_url,
            "--json",
        ]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if (run_dir / "run.sqlite").exists():
                with RunStore.open(run_dir) as store:
                    if len(store.completed_indices()) >= 3:
                        break
            time.sleep(0.2)
        assert process.poll() is None, "the run finished before it could be interrupted"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        with RunStore.open(run_dir) as store:
            kept = {
                e.index: e.model_dump_json()
                for e in store.episodes()
                if e.index in store.completed_indices()
            }
        assert 3 <= len(kept) < 12
        finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert finished.returncode == 0, finished.stderr
    assert json.loads(finished.stdout)["episodes"] == 12
    with RunStore.open(run_dir) as store:
        episodes = store.episodes()
        assert sorted(e.index for e in episodes) == list(range(12))
        assert all(store.verdict(e.id) is not None for e in episodes)
        assert {i: e.model_dump_json() for e in episodes if (i := e.index) in kept} == kept


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_unreachable_server_is_a_one_line_error(tmp_path: Path) -> None:
    url = closed_port_url()
    result = runner.invoke(
        app, ["simulate", "--run-dir", str(tmp_path / "run"), "--policy", url, "--simulator", url]
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "cannot reach" in lines[0]


def test_invalid_tool_schema_in_catalog_is_a_one_line_error(
    server: LoopbackOpenAIServer, tmp_path: Path
) -> None:
    catalog = tmp_path / "catalog.json"
    tool = {
        "name": "broken",
        "description": "d",
        "parameters": {"type": "object", "properties": {"x": {"type": "strin"}}},
    }
    catalog.write_text(json.dumps({"domain": "bad", "description": "d", "tools": [tool]}))
    result = simulate(server, tmp_path / "run", "--catalog", str(catalog))
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "broken" in result.output
    assert not (tmp_path / "run").exists()


def test_corrupt_run_dir_is_an_error_and_left_untouched(
    server: LoopbackOpenAIServer, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    store_file = run_dir / "run.sqlite"
    store_file.write_bytes(os.urandom(4096))
    digest = hashlib.sha256(store_file.read_bytes()).hexdigest()
    result = simulate(server, run_dir, "--episodes", "1")
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "not a trustee-rl run store" in result.output
    assert hashlib.sha256(store_file.read_bytes()).hexdigest() == digest
