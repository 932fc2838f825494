"""The fault-injecting loopback server, and `trustee simulate` surviving it: nothing lost, no
episode ended by a fault that a retry could fix, no reward without a judge's answer."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tests.conftest import make_task
from trustee_rl.cli import app
from trustee_rl.schema import CriterionResult, Episode, SimCall, Verdict
from trustee_rl.store import RunStore
from trustee_rl.testing.faults import (
    FAULTS,
    FaultShares,
    FaultyOpenAIServer,
    tally_run,
)
from trustee_rl.testing.openai_server import AgentResponder

runner = CliRunner()
PLAIN: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
NATIVE_JSON: dict[str, Any] = {
    **PLAIN,
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": {"type": "object"}},
    },
}
PROMPTED_JSON: dict[str, Any] = {
    **PLAIN,
    "messages": [
        {"role": "system", "content": 'Answer with JSON. JSON schema: {"type": "object"}'},
        {"role": "user", "content": "hi"},
    ],
}


def _outcome(client: httpx.Client, url: str) -> str:
    """Which fault, if any, one plain chat request met, as the client sees it."""
    try:
        response = client.post(f"{url}/chat/completions", json=PLAIN)
    except httpx.RemoteProtocolError:
        return "drop"
    if response.status_code == 429:
        assert float(response.headers["Retry-After"]) == 1.0
        return "rate_limited"
    if response.status_code == 500:
        return "error"
    try:
        response.json()
    except ValueError:
        return "truncated"
    return "none"


def _outcomes(seed: int, shares: FaultShares, count: int) -> list[str]:
    with FaultyOpenAIServer(shares=shares, seed=seed) as server, httpx.Client() as client:
        seen = [_outcome(client, server.base_url) for _ in range(count)]
    assert {k: v for k, v in Counter(seen).items() if k != "none"} == server.injected
    return seen


def test_faults_follow_their_shares_and_repeat_with_the_seed() -> None:
    shares = FaultShares(truncated=0.2, error=0.2, rate_limited=0.2, drop=0.2)
    first = _outcomes(5, shares, 200)
    counts = Counter(first)
    for fault in ("truncated", "error", "rate_limited", "drop", "none"):
        assert 20 <= counts[fault] <= 60, counts
    assert _outcomes(5, shares, 200) == first
    assert _outcomes(6, shares, 200) != first


def test_malformed_content_only_for_requests_asking_for_json() -> None:
    with FaultyOpenAIServer(shares=FaultShares(malformed=1.0)) as server, httpx.Client() as client:
        contents = [
            client.post(f"{server.base_url}/chat/completions", json=request).json()["choices"][0][
                "message"
            ]["content"]
            for request in (PLAIN, NATIVE_JSON, PROMPTED_JSON)
        ]
    plain, *broken = contents
    assert plain.startswith("This is loopback reply")
    for content in broken:
        with pytest.raises(ValueError):
            json.loads(content)
    assert server.injected == {"malformed": 2}


def test_bad_shares_and_unknown_faults_are_refused() -> None:
    with pytest.raises(ValueError, match=r"error=1\.5 is not between 0 and 1"):
        FaultShares(error=1.5)
    with pytest.raises(ValueError, match=r"add up to 1\.2, over 1"):
        FaultShares(error=0.6, drop=0.6)
    with pytest.raises(ValueError, match=r"unknown faults \['teapot'\]"):
        FaultyOpenAIServer(shares=FaultShares(), script=["teapot"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_command_line_serves_the_faults_it_is_given() -> None:
    port = _free_port()
    command = [sys.executable, "-m", "trustee_rl.testing.faults", "--port", str(port)]
    with subprocess.Popen([*command, "--error", "1"], stdout=subprocess.PIPE) as process:
        try:
            assert process.stdout is not None
            assert process.stdout.readline().decode().startswith("serving http://127.0.0.1")
            url = f"http://127.0.0.1:{port}/v1"
            assert httpx.get(f"{url}/models").status_code == 200
            assert httpx.post(f"{url}/chat/completions", json=PLAIN).status_code == 500
        finally:
            process.terminate()
    refused = subprocess.run([*command, "--drop", "2"], capture_output=True, text=True)
    assert refused.returncode == 2
    assert "drop=2.0 is not between 0 and 1" in refused.stderr


def _judged_episode(index: int, judge_call: SimCall) -> tuple[Episode, Verdict]:
    episode = Episode(
        id=f"ep_{index}",
        task_id="task_test",
        index=index,
        seed=index,
        policy_model="p",
        sim_calls=[judge_call],
        status="done",
        end_reason="user_done",
    )
    criteria = [CriterionResult(name="intent", passed=True, reason="ok", source="judge", score=1.0)]
    verdict = Verdict(
        episode_id=episode.id,
        scored=True,
        reward=1.0,
        criteria=criteria,
        judge_model="m",
        prompt_version="judge@1",
    )
    return episode, verdict


def _unscored(index: int, reason: str) -> tuple[Episode, Verdict]:
    episode = Episode(
        id=f"ep_{index}",
        task_id="task_test",
        index=index,
        seed=index,
        policy_model="p",
        status="failed",
        end_reason=reason,
    )
    return episode, Verdict.unscored(episode.id, reason, "m", "judge@1")


def test_tally_finds_lost_episodes_aborted_ones_and_invented_rewards(tmp_path: Path) -> None:
    def judge_call(*, output: str | None = None, error: str | None = None) -> SimCall:
        return SimCall(
            role="judge",
            model="m",
            prompt_version="judge@1",
            messages=[],
            output=output,
            error=error,
        )

    policy_gave_up = "policy failed: gave up after 5 tries: HTTP 503 from the server"
    simulator_gave_up = "simulator failed: user simulator gave no valid output in 3 tries"
    refused_output = "simulator failed: tool simulator gave no valid output in 3 tries"
    played = [
        _judged_episode(0, judge_call(output='{"intent": {}}')),
        _judged_episode(1, judge_call(error="LM error: HTTP 500")),  # scored all the same
        _unscored(2, policy_gave_up),
        _unscored(3, f"{simulator_gave_up}: LM error: gave up after 5 tries: HTTP 500"),
        _unscored(4, f"{refused_output}: LM error: reply is not JSON after one repair round"),
    ]
    with RunStore.create(tmp_path, {"judge": {"mode": "lm"}}) as store:
        store.save_task(make_task())
        for episode, verdict in played:
            store.save_episode(episode, verdict)
    tally = tally_run(tmp_path, requested=6)
    assert (tally.stored, tally.scored, tally.lost) == (5, 2, 1)
    assert (tally.aborted, tally.invented) == (2, 1)
    assert tally.unscored_by_reason == {
        "policy failed: gave up after 5 tries": 1,
        simulator_gave_up: 1,
        refused_output: 1,
    }


def _simulate(server: FaultyOpenAIServer, run_dir: Path, episodes: int, *settings: str) -> Any:
    command = ["simulate", "--run-dir", str(run_dir), "--episodes", str(episodes)]
    for role in ("policy", "simulator"):
        command += [f"--{role}", server.base_url, f"--{role}-model", "loopback-model"]
    command += ["--concurrency", "10", "--judge", "lm", "--json"]
    for setting in ("http.timeout_s=0.5", "http.backoff_max_s=0.5", *settings):
        command += ["--set", setting]
    return runner.invoke(app, command)


def test_simulate_survives_a_faulty_server(tmp_path: Path) -> None:
    hang_s = 30.0  # far past the client timeout, so a run that waits one out is caught
    server = FaultyOpenAIServer(
        AgentResponder(seed=0),
        shares=FaultShares.spread(malformed=0.3, transport=0.1),
        seed=2,
        script=FAULTS,  # each fault at least once, whatever the draws
        hang_s=hang_s,
        retry_after_s=0.2,
    )
    with server:
        started = time.perf_counter()
        result = _simulate(server, tmp_path / "run", 20)
        elapsed = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    assert elapsed < hang_s / 2
    assert set(server.injected) == set(FAULTS)
    tally = tally_run(tmp_path / "run", requested=20)
    assert (tally.stored, tally.lost, tally.aborted, tally.invented) == (20, 0, 0, 0), tally
    assert tally.scored + sum(tally.unscored_by_reason.values()) == 20
    assert tally.scored >= 15


def test_without_retries_the_same_faults_abort_episodes(tmp_path: Path) -> None:
    shares = FaultShares.spread(malformed=0.0, transport=0.5)
    with FaultyOpenAIServer(AgentResponder(seed=0), shares=shares, seed=2, hang_s=5) as server:
        result = _simulate(server, tmp_path / "run", 6, "http.max_retries=0")
    assert result.exit_code == 0, result.output
    tally = tally_run(tmp_path / "run", requested=6)
    assert (tally.stored, tally.lost, tally.invented) == (6, 0, 0)
    assert tally.aborted >= 1


def test_bad_client_settings_are_refused_before_anything_runs(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "simulate",
            "--run-dir",
            str(tmp_path / "run"),
            "--policy",
            "http://127.0.0.1:9/v1",
            "--simulator",
            "http://127.0.0.1:9/v1",
            "--set",
            "http.timeout_s=0",
        ],
    )
    assert result.exit_code == 2
    assert "timeout_s" in result.output
    assert not (tmp_path / "run").exists()
