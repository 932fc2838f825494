"""BFCL's executable backends in a separate, resource-limited process.

BFCL's multi-turn categories run a model's calls, and check them, by `eval()` of text built from the
model's output. That text is never evaluated in the evaluating process: a child process (this module
run as `python -m`) does it, under limits on memory, CPU time and open files, and speaks JSON lines
on stdin/stdout. A crashed or hung child fails the entry it was serving, says so, and is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import sys
from pathlib import Path
from typing import Any, TextIO

MODEL_NAME = "trustee-rl"
MEMORY_LIMIT_BYTES = 4 << 30
CPU_LIMIT_S = 4 * 3600
OPEN_FILES_LIMIT = 256
REQUEST_TIMEOUT_S = 120.0


class SandboxError(RuntimeError):
    """The sandbox process died, hung or answered with an error."""


def _limit_resources() -> None:  # runs in the child, before exec
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_LIMIT_S, CPU_LIMIT_S))
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES_LIMIT, OPEN_FILES_LIMIT))


class Sandbox:
    """The parent's handle on one child process; requests are answered one at a time."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def _start(self) -> asyncio.subprocess.Process:
        self.workdir.mkdir(parents=True, exist_ok=True)
        environment = dict(os.environ, BFCL_PROJECT_ROOT=str(self.workdir))
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "trustee_rl.evaluate.bfcl_sandbox",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            cwd=self.workdir,
            env=environment,
            preexec_fn=_limit_resources,
            limit=1 << 26,  # one answer line may carry a large file system state
        )

    async def request(self, payload: dict[str, Any]) -> Any:
        async with self._lock:
            if self._process is None or self._process.returncode is not None:
                self._process = await self._start()
            process = self._process
            assert process.stdin is not None and process.stdout is not None
            try:
                process.stdin.write(json.dumps(payload).encode() + b"\n")
                await process.stdin.drain()
                line = await asyncio.wait_for(process.stdout.readline(), REQUEST_TIMEOUT_S)
            except (TimeoutError, ConnectionError) as error:
                await self._kill()
                raise SandboxError(
                    f"sandbox did not answer a {payload['op']!r} request: {error!r}"
                ) from error
            if not line:
                await self._kill()
                raise SandboxError(f"sandbox process died during a {payload['op']!r} request")
            answer = json.loads(line)
            if "error" in answer:
                raise SandboxError(answer["error"])
            return answer["result"]

    async def _kill(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()
        self._process = None

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


def _serve(answers: TextIO) -> None:
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import multi_turn_checker
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_utils import (
        execute_multi_turn_func_call,
    )

    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] == "execute":
                result: Any = execute_multi_turn_func_call(
                    request["calls"],
                    request["initial_config"],
                    request["involved_classes"],
                    MODEL_NAME,
                    request["entry_id"],
                    long_context=request["long_context"],
                    is_evaL_run=False,
                )[0]
            elif request["op"] == "check":
                entry = request["entry"]
                result = multi_turn_checker(
                    request["decoded"],
                    request["ground_truth"],
                    entry,
                    entry["id"].rsplit("_", 1)[0],
                    MODEL_NAME,
                )
            else:
                raise ValueError(f"unknown op {request['op']!r}")
            answer = {"result": result}
        except Exception as error:
            answer = {"error": f"{type(error).__name__}: {error}"}
        answers.write(json.dumps(answer, default=str) + "\n")
        answers.flush()


if __name__ == "__main__":
    # BFCL's backends print; only answers may reach the parent's pipe.
    pipe = sys.stdout
    sys.stdout = sys.stderr
    _serve(pipe)
