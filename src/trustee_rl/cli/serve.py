"""`trustee serve`: a checkpoint behind vLLM's OpenAI-compatible server, ready for every command."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from trustee_rl.cli_common import fail, known_errors, one_line


def serve(
    checkpoint: Annotated[
        Path, typer.Argument(help="a Hugging Face checkpoint dir, e.g. runs/cpu-default/final")
    ],
    name: Annotated[str, typer.Option(help="the model's name on the server")] = "trustee",
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    dtype: Annotated[
        str, typer.Option(help="vLLM's --dtype: auto, float32, bfloat16 or float16")
    ] = "auto",
    cpu_kv_cache_gib: Annotated[
        float | None,
        typer.Option(help="KV cache of vLLM's CPU build, in GiB (default: vLLM's own)"),
    ] = None,
    vllm_args: Annotated[
        list[str] | None,
        typer.Option(
            "--vllm-arg", help="one more argument for vLLM, e.g. --vllm-arg=--max-model-len=4096"
        ),
    ] = None,
    log: Annotated[
        Path | None,
        typer.Option(help="file for vLLM's output (default: a temporary file, removed at exit)"),
    ] = None,
) -> None:
    """Serve a checkpoint with vLLM (Hermes tool calls) until Ctrl-C; prints the base URL."""
    from trustee_rl.lm.vllm_server import VLLMServer, VLLMStartError

    try:
        server = VLLMServer(
            checkpoint,
            name=name,
            host=host,
            port=port,
            dtype=dtype,
            cpu_kv_cache_gib=cpu_kv_cache_gib,
            extra_args=vllm_args or [],
            log_path=log,
        )
        typer.echo(f"starting vLLM for {checkpoint} (minutes on a CPU) ...", err=True)
        server.start()
    except VLLMStartError as error:
        if error.log_tail:
            typer.echo(error.log_tail, err=True)
        fail(error.summary)
    except known_errors() as error:
        fail(one_line(error))
    typer.echo(f"serving {name} at {server.base_url} (vLLM's log: {server.log_path}); Ctrl-C stops")
    # Stopped by SIGTERM as by Ctrl-C: vLLM runs in its own session, so it must go with us.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        status = server.wait()
    except KeyboardInterrupt:
        server.stop()
        return
    finally:
        signal.signal(signal.SIGTERM, previous)
    typer.echo(server.log_tail(), err=True)
    server.stop()
    fail(f"vLLM exited with status {status}")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
