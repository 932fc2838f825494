"""API keys reach the model servers and nothing else: a run against a loopback server that demands a
sentinel key succeeds, and no file the run, its report or its export wrote holds the key."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from trustee_rl.testing.openai_server import AgentResponder, LoopbackOpenAIServer

SENTINEL = "sk-sentinel-5f1c0a9e7d3b42"


@pytest.fixture
def server() -> Iterator[LoopbackOpenAIServer]:
    with LoopbackOpenAIServer(AgentResponder(seed=0), api_key=SENTINEL) as running:
        yield running


def trustee(*args: str, key: str | None = None, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real command line in its own process, with `key` as the only API key around."""
    env = {name: value for name, value in os.environ.items() if name != "OPENAI_API_KEY"}
    env["OMP_NUM_THREADS"] = "1"
    if key is not None:
        env["OPENAI_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "trustee_rl.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def simulate_args(server: LoopbackOpenAIServer, run_dir: str) -> list[str]:
    url = server.base_url
    return ["simulate", "--run-dir", run_dir, "--policy", url, "--simulator", url]


def files_holding(root: Path, secret: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def run_report_export(
    server: LoopbackOpenAIServer, out: Path, *options: str, key: str | None
) -> str:
    """Simulate, report and export in `out`; return everything the commands printed."""
    simulated = trustee(
        *simulate_args(server, "run"),
        "--episodes",
        "2",
        "--judge",
        "lm",
        *options,
        key=key,
        cwd=out,
    )
    assert simulated.returncode == 0, simulated.stderr
    reported = trustee("report", "run", "--out", "report.html", cwd=out)
    exported = trustee("export", "run", "--out", "export", cwd=out)
    assert reported.returncode == 0 and exported.returncode == 0, reported.stderr + exported.stderr
    written = {path.relative_to(out).as_posix() for path in out.rglob("*") if path.is_file()}
    assert {"run/run.sqlite", "report.html", "export/episodes.jsonl"} <= written
    return "".join(p.stdout + p.stderr for p in (simulated, reported, exported))


def test_key_from_the_environment_is_used_and_never_written(
    server: LoopbackOpenAIServer, tmp_path: Path
) -> None:
    printed = run_report_export(server, tmp_path, key=SENTINEL)
    assert server.requests  # served only with the key: the run did use it
    assert files_holding(tmp_path, SENTINEL) == []
    assert SENTINEL not in printed


def test_key_from_a_key_file_is_used_and_never_written(
    server: LoopbackOpenAIServer, tmp_path: Path
) -> None:
    key_file = tmp_path / "secrets" / "server.key"
    key_file.parent.mkdir()
    key_file.write_text(SENTINEL + "\n", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    printed = run_report_export(server, out, "--api-key-file", str(key_file), key=None)
    assert server.requests
    assert files_holding(out, SENTINEL) == []
    assert SENTINEL not in printed


def test_a_wrong_key_stops_the_run_without_echoing_it(
    server: LoopbackOpenAIServer, tmp_path: Path
) -> None:
    wrong = "sk-wrong-0d8e"
    result = trustee(*simulate_args(server, "run"), "--episodes", "2", key=wrong, cwd=tmp_path)
    assert result.returncode == 2
    [error] = [line for line in result.stderr.splitlines() if line]  # beside the progress bar's end
    assert error.startswith("error: HTTP 401")
    assert wrong not in result.stdout + result.stderr
    assert files_holding(tmp_path, wrong) == []


@pytest.mark.parametrize(
    "url",
    [f"http://user:{SENTINEL}@127.0.0.1:9/v1", f"http://127.0.0.1:9/v1?api_key={SENTINEL}"],
)
def test_a_key_in_a_server_url_is_refused_before_anything_is_stored(
    url: str, tmp_path: Path
) -> None:
    result = trustee("simulate", "--run-dir", "run", "--simulator", url, cwd=tmp_path)
    assert result.returncode == 2
    assert "carries credentials" in result.stderr and result.stderr.count("\n") == 1
    assert SENTINEL not in result.stdout + result.stderr
    assert not (tmp_path / "run").exists()
