"""How every `trustee` command reports bad input: one line on stderr, exit status 2."""

from __future__ import annotations

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
