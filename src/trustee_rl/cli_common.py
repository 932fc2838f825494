"""What every `trustee` command shares: bad input reported as one line on stderr with exit status 2,
the API key file, and the process settings for running models locally."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import typer


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def known_errors(*extra: type[BaseException]) -> tuple[type[BaseException], ...]:
    """The errors that mean bad input or an unusable backend, not a bug in trustee."""
    from pydantic import ValidationError

    from trustee_rl.lm.base import LMError
    from trustee_rl.schema import InvalidToolSchema
    from trustee_rl.sim.catalog import CatalogError
    from trustee_rl.store import StoreError

    return (
        LMError,
        StoreError,
        CatalogError,
        InvalidToolSchema,
        ValidationError,
        ValueError,
        *extra,
    )


def one_line(error: BaseException) -> str:
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        if first["type"] == "extra_forbidden":
            return f"invalid configuration: {where}: no such setting"
        given = first.get("input")
        shown = f" (given {given!r})" if isinstance(given, str | int | float) else ""
        return f"invalid configuration: {where}: {first['msg']}{shown}"
    return " ".join(str(error).split())


def use_api_key_file(path: Path | None) -> None:
    """Take the model servers' API key from a file (a mounted secret, say) for this process only:
    it goes where the OpenAI-compatible backend looks, OPENAI_API_KEY, never into the run's
    settings or store. The file holds the key alone, on one line."""
    if path is None:
        return
    where = f"API key file {path}"
    try:
        key = path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError as error:
        raise ValueError(f"{where}: not UTF-8 text") from error
    except OSError as error:
        raise ValueError(f"{where}: {error.strerror or error}") from error
    if not key or len(key.split()) != 1:
        raise ValueError(f"{where}: expected the key alone, on one line")
    os.environ["OPENAI_API_KEY"] = key


def local_runtime() -> None:
    """Settings for running models in this process; call before torch or llama.cpp load."""
    # torch and llama.cpp share the cores: spinning OpenMP threads would starve each other.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # A hub model id is downloaded unless the user asks for offline (HF_HUB_OFFLINE=1); no telemetry.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
