"""`trustee tasks`: bring tools from elsewhere into the catalog that tasks are generated from."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from trustee_rl.cli_common import fail, known_errors, one_line

tasks_app = typer.Typer(
    help="Manage the tool catalog that tasks are generated from.", no_args_is_help=True
)


@tasks_app.command("import")
def import_tools(
    source: Annotated[
        Path,
        typer.Argument(
            help="an OpenAPI 3 document (YAML or JSON), an MCP tools/list response, or OpenAI "
            "function schemas (JSON or JSON Lines)"
        ),
    ],
    out: Annotated[Path, typer.Option(help="the catalog file to write (for --catalog)")],
    domain: Annotated[
        str | None, typer.Option(help="the domain's name (default: from the API title or file)")
    ] = None,
    force: Annotated[bool, typer.Option(help="replace --out if it exists")] = False,
) -> None:
    """Import tools as one catalog domain, one tool per operation or function."""
    from trustee_rl.sim.catalog import domain_document, import_domain

    if out.exists() and not force:
        fail(f"{out} exists; pass --force to replace it")
    try:
        imported, notes = import_domain(source, domain)
        _write_atomically(out, json.dumps(domain_document(imported), indent=2) + "\n")
    except known_errors(OSError) as error:
        fail(one_line(error))
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    tools = f"{len(imported.tools)} tool" + ("s" if len(imported.tools) != 1 else "")
    typer.echo(f"imported {tools} into domain {imported.name!r}: {out}")


def _write_atomically(path: Path, text: str) -> None:
    # A crash mid-write must not leave a half catalog where a whole one was.
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
