"""The `trustee` command line, split by command group. Heavy modules are imported inside commands
so `--help` is instant."""

from __future__ import annotations

import sys

import typer

from trustee_rl.cli import judge, runs, serve, simulate, train
from trustee_rl.cli.extras import missing_extra_reported
from trustee_rl.cli.tasks import tasks_app
from trustee_rl.evaluate.commands import eval_app

app = typer.Typer(
    name="trustee",
    help="Train tool-calling agents with RL in environments a free open model simulates.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command()(simulate.simulate)
app.command()(train.train)
app.command()(judge.judge)
app.command()(runs.export)
app.command()(runs.report)
app.command()(serve.serve)
app.add_typer(eval_app, name="eval")
app.add_typer(tasks_app, name="tasks")


def main() -> None:
    with missing_extra_reported(sys.argv[1:]):
        app(prog_name="trustee")
