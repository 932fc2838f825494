"""BFCL's executable backends in a separate, confined process.

BFCL's multi-turn categories run a model's calls, and check them, by `eval()` of text built from
the model's output. That text is never evaluated in the evaluating process: a child process (this
module run as `python -m`) does it and speaks JSON lines on stdin/stdout. The child starts with
none of the parent's secrets: an allowlisted environment and a fresh, empty working directory of
its own. It confines itself before anything else (`confinement.confine`: resource limits, Landlock,
audit hooks) and, where the system lets an unprivileged process do so, runs in new user and
network namespaces, so it has no network at all. Its first answer names the layers that hold; a
missing kernel layer is logged as a warning. A crashed or hung child fails the entry it was
serving, says why, and is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from trustee_rl.evaluate.confinement import Limits, confine

MODEL_NAME = "trustee-rl"
REQUEST_TIMEOUT_S = 120.0
# All the child keeps of the parent's environment; anything else (keys, tokens) stays behind.
INHERITED_ENVIRONMENT = ("PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ")
NAMESPACES = ("--user", "--net")
CHILD_MODULE = "trustee_rl.evaluate.bfcl_sandbox"

_log = logging.getLogger(__name__)


class SandboxError(RuntimeError):
    """The sandbox process died, hung or answered with an error."""


class Sandbox:
    """The parent's handle on one child process; requests are answered one at a time. Each child
    gets a fresh directory under `workdir`, removed when the child ends."""

    def __init__(self, workdir: Path, limits: Limits | None = None) -> None:
        self.workdir = workdir
        self.limits = limits or Limits()
        self.layers: list[str] = []  # the confinement of the latest child, once it has started
        self._process: asyncio.subprocess.Process | None = None
        self._home: Path | None = None
        self._lock = asyncio.Lock()

    async def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._home = home = Path(tempfile.mkdtemp(prefix="child-", dir=self.workdir)).resolve()
        isolation = _namespace_command()
        self._process = process = await asyncio.create_subprocess_exec(
            *isolation,
            sys.executable,
            "-m",
            CHILD_MODULE,
            json.dumps(asdict(self.limits)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            cwd=home,
            env=_child_environment(home),
            limit=1 << 26,  # one answer line may carry a large file system state
        )
        try:
            confined: list[str] = await self._answer(process, "start")
        except SandboxError:
            await self._kill()
            raise
        self.layers = (["network namespace"] if isolation else []) + confined
        if not isolation or not any(layer.startswith("landlock") for layer in confined):
            _log.warning(
                "the BFCL sandbox has only %s on this system: no network namespace or no"
                " Landlock, so part of its confinement rests on audit hooks alone",
                ", ".join(self.layers),
            )

    async def request(self, payload: dict[str, Any]) -> Any:
        async with self._lock:
            if self._process is None or self._process.returncode is not None:
                await self._start()
            process = self._process
            assert process is not None and process.stdin is not None
            try:
                process.stdin.write(json.dumps(payload).encode() + b"\n")
                await process.stdin.drain()
            except ConnectionError as error:
                await self._kill()
                raise SandboxError(
                    f"sandbox took no {payload['op']!r} request: {error!r}"
                ) from error
            return await self._answer(process, f"a {payload['op']!r} request")

    async def _answer(self, process: asyncio.subprocess.Process, during: str) -> Any:
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), REQUEST_TIMEOUT_S)
        except (TimeoutError, ConnectionError) as error:
            await self._kill()
            raise SandboxError(f"sandbox did not answer during {during}: {error!r}") from error
        if not line:
            status = await process.wait()
            await self._kill()
            raise SandboxError(f"sandbox process died during {during} ({_exit_status(status)})")
        answer = json.loads(line)
        if "error" in answer:
            raise SandboxError(answer["error"])
        return answer["result"]

    async def _kill(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()
        self._process = None
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None

    async def close(self) -> None:
        async with self._lock:
            if self._process is not None and self._process.returncode is None:
                assert self._process.stdin is not None
                self._process.stdin.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._process.wait(), 10)
            await self._kill()

    async def execute(
        self, calls: list[str], entry: dict[str, Any], long_context: bool
    ) -> list[str]:
        """Run one step's calls against the entry's backend state, which persists between steps."""
        results: list[str] = await self.request(
            {
                "op": "execute",
                "calls": calls,
                "initial_config": entry.get("initial_config", {}),
                "involved_classes": entry["involved_classes"],
                "entry_id": entry["id"],
                "long_context": long_context,
            }
        )
        return results

    async def check(
        self, decoded: list[list[list[str]]], ground_truth: list[list[str]], entry: dict[str, Any]
    ) -> dict[str, Any]:
        """BFCL's multi-turn checker on the model's decoded calls, turn by turn, step by step."""
        verdict: dict[str, Any] = await self.request(
            {"op": "check", "decoded": decoded, "ground_truth": ground_truth, "entry": entry}
        )
        return verdict


@functools.cache
def _namespace_command() -> tuple[str, ...]:
    """`unshare` into new user and network namespaces, where this system lets an unprivileged
    process do so (some kernels and container runtimes refuse); else nothing."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    probe = subprocess.run(
        [unshare, *NAMESPACES, "true"], capture_output=True, timeout=30, check=False
    )
    return (unshare, *NAMESPACES) if probe.returncode == 0 else ()


def _child_environment(home: Path) -> dict[str, str]:
    kept = {name: os.environ[name] for name in INHERITED_ENVIRONMENT if name in os.environ}
    return kept | {
        "HOME": str(home),
        "TMPDIR": str(home),
        "BFCL_PROJECT_ROOT": str(home),
        # The parent's import path, so the child finds the same trustee_rl and bfcl_eval.
        "PYTHONPATH": os.pathsep.join(os.path.abspath(entry) for entry in sys.path if entry),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _exit_status(status: int) -> str:
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-status).name}"
    return f"exit status {status}"


def _handlers() -> dict[str, Callable[[dict[str, Any]], Any]]:
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import multi_turn_checker
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_utils import (
        execute_multi_turn_func_call,
    )

    def execute(request: dict[str, Any]) -> Any:
        return execute_multi_turn_func_call(
            request["calls"],
            request["initial_config"],
            request["involved_classes"],
            MODEL_NAME,
            request["entry_id"],
            long_context=request["long_context"],
            is_evaL_run=False,
        )[0]

    def check(request: dict[str, Any]) -> Any:
        entry = request["entry"]
        return multi_turn_checker(
            request["decoded"],
            request["ground_truth"],
            entry,
            entry["id"].rsplit("_", 1)[0],
            MODEL_NAME,
        )

    return {"execute": execute, "check": check}


def _send(answers: TextIO, answer: dict[str, Any]) -> None:
    answers.write(json.dumps(answer, default=str) + "\n")
    answers.flush()


def _main(answers: TextIO) -> None:
    try:
        layers = confine(Path.cwd(), Limits(**json.loads(sys.argv[1])))
        handlers = _handlers()
    except Exception as error:
        _send(answers, {"error": f"sandbox failed to start: {type(error).__name__}: {error}"})
        raise SystemExit(1) from error
    _send(answers, {"result": layers})
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] not in handlers:
                raise ValueError(f"unknown op {request['op']!r}")
            answer = {"result": handlers[request["op"]](request)}
        except Exception as error:
            answer = {"error": f"{type(error).__name__}: {error}"}
        _send(answers, answer)


if __name__ == "__main__":
    # BFCL's backends print; only answers may reach the parent's pipe.
    pipe = sys.stdout
    sys.stdout = sys.stderr
    _main(pipe)
