"""A command that needs an optional part of trustee-rl (an extra of its package) that is not
installed fails with one line naming the extra, instead of a traceback."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import typer

# The top-level modules trustee-rl imports from each extra's packages.
EXTRA_OF_MODULE = {
    "torch": "train",
    "transformers": "train",
    "trl": "train",
    "datasets": "train",
    "peft": "train",
    "gguf": "train",
    "llama_cpp": "embedded",
}


@contextmanager
def missing_extra_reported(argv: Sequence[str]) -> Iterator[None]:
    """Turn the import error of an extra's module into `error: trustee CMD needs the X extra: ...`
    and exit status 2; `argv` is the command line after the program name."""
    try:
        yield
    except ModuleNotFoundError as error:
        # Only the extra's module itself missing: a module missing inside an installed package is
        # a broken install, which the traceback explains better.
        extra = EXTRA_OF_MODULE.get(error.name or "")
        if extra is None:
            raise
        words = itertools.takewhile(lambda word: not word.startswith("-"), argv)
        command = " ".join(["trustee", *words])
        typer.echo(
            f"error: {command} needs the {extra} extra: pip install 'trustee-rl[{extra}]'",
            err=True,
        )
        raise SystemExit(2) from None
