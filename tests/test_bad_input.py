"""Every row of docs/bad-input.md, run through the real CLI: the error it prints (exactly, on one
line), its exit status, and the runs already stored beside it left byte for byte as they were."""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from trustee_rl.cli import app
from trustee_rl.store import RunStore
from trustee_rl.testing.openai_server import AgentResponder, LoopbackOpenAIServer
from trustee_rl.train.config import load_train_config

DOC = Path(__file__).parent.parent / "docs" / "bad-input.md"
# A table row: | `command` | `error line` | exit status |
ROW = re.compile(r"^\| `(?P<command>trustee [^`]+)` \| `(?P<error>[^`]+)` \| (?P<status>\d+) \|$")
# The files the doc's commands name, as the doc describes them.
FILES: dict[str, bytes] = {
    "unknown.yaml": b"episodes: 2\nbogus: 1\n",
    "wrong-type.yaml": b"episodes: many\n",
    "latin1.yaml": "episodes: 2  # caf\u00e9\n".encode("latin-1"),
    "broken.yaml": b"episodes: [2,\n",
    "list.yaml": b"- episodes: 2\n",
    "empty-key.txt": b"",
}
runner = CliRunner()


def doc_rows() -> list[tuple[str, str, int]]:
    rows = [ROW.match(line) for line in DOC.read_text(encoding="utf-8").splitlines()]
    return [(m["command"], m["error"], int(m["status"])) for m in rows if m]


def doc_cases() -> list[Any]:
    return [pytest.param(*row, id=row[0].removeprefix("trustee ")) for row in doc_rows()]


def test_the_doc_has_a_row_for_every_kind_of_bad_input() -> None:
    commands = " ".join(command for command, _, _ in doc_rows())
    for needed in ("--config unknown.yaml", "latin1.yaml", "missing.yaml", "--set", "--resume"):
        assert needed in commands
    for count in ("episodes", "steps", "group_size", "concurrency"):
        assert count in commands
    assert "--run-dir sim-run" in commands and "--run-dir train-run" in commands


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackOpenAIServer]:
    with LoopbackOpenAIServer(AgentResponder(seed=0)) as running:
        yield running


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, server: LoopbackOpenAIServer) -> Path:
    """What the doc's commands run beside: its files, a finished simulate run (`sim-run`), a
    train run's store (`train-run`) and a run dir whose store is not a database (`damaged-run`)."""
    root = tmp_path_factory.mktemp("bad-input")
    for name, content in FILES.items():
        (root / name).write_bytes(content)
    simulated = runner.invoke(
        app,
        [
            "simulate",
            "--run-dir",
            str(root / "sim-run"),
            "--policy",
            server.base_url,
            "--simulator",
            server.base_url,
            "--episodes",
            "2",
            "--judge",
            "rules",
        ],
    )
    assert simulated.exit_code == 0, simulated.output
    RunStore.create(root / "train-run", load_train_config("cpu").model_dump(mode="json")).close()
    (root / "damaged-run").mkdir()
    (root / "damaged-run" / "run.sqlite").write_bytes(b"not a database")
    return root


def fingerprint(root: Path) -> dict[str, str]:
    """The hash of every file under `root`, by relative path."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize(("command", "error", "status"), doc_cases())
def test_bad_input_fails_in_one_line_and_leaves_stored_runs_alone(
    command: str,
    error: str,
    status: int,
    workdir: Path,
    server: LoopbackOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(workdir)
    before = fingerprint(workdir)
    args = shlex.split(command.replace("$SERVER", server.base_url))[1:]
    result = runner.invoke(app, args)
    assert status != 0
    assert (result.exit_code, result.stderr) == (status, error + "\n"), result.output
    assert result.stdout == ""
    assert fingerprint(workdir) == before
    assert not (workdir / "new-run").exists()
