"""What every `trustee` command shares: bad input reported as one line on stderr with exit status 2,
and the process settings for running models locally."""

from __future__ import annotations

import os
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
        return f"invalid configuration: {where}: {first['msg']}"
    return " ".join(str(error).split())


def local_runtime() -> None:
    """Settings for running models in this process; call before torch or llama.cpp load."""
    # torch and llama.cpp share the cores: spinning OpenMP threads would starve each other.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Everything is local: never let a library reach for a model hub or send telemetry.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
