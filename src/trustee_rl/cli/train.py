"""`trustee train`: GRPO in simulated environments."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from trustee_rl.cli.run_kind import check_run_kind
from trustee_rl.cli_common import fail, known_errors, local_runtime, one_line, use_api_key_file


def train(
    run_dir: Annotated[
        Path, typer.Option(help="where checkpoints, metrics and the run store go")
    ] = Path("runs/train"),
    preset: Annotated[
        str, typer.Option(help="'cpu' (laptop, embedded models) or 'paper' (TRUSTEE on GPUs)")
    ] = "cpu",
    config: Annotated[
        Path | None, typer.Option(help="YAML file of settings on top of the preset")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="override one setting, e.g. --set steps=5 (repeatable)"),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="continue the run in --run-dir from its last checkpoint")
    ] = False,
    api_key_file: Annotated[
        Path | None,
        typer.Option(help="file holding the simulator server's API key [default: $OPENAI_API_KEY]"),
    ] = None,
    tasks: Annotated[
        Path | None,
        typer.Option(
            help="JSONL file of tasks (`trustee tasks synthesize` writes one) to train on in "
            "turn instead of generated ones"
        ),
    ] = None,
    control_of: Annotated[
        Path | None,
        typer.Option(
            help="train the control arm of this finished run: supervised training from its warm "
            "start, on fresh demonstrations, for its GRPO's wall time (its settings are used)"
        ),
    ] = None,
) -> None:
    """Train a tool-calling policy with GRPO in simulated environments."""
    local_runtime()
    from trustee_rl.store import STORE_FILE
    from trustee_rl.train.config import TrainingRefused, load_train_config

    try:
        use_api_key_file(api_key_file)
        overrides = [*(overrides or []), *([f"tasks={tasks.resolve()}"] if tasks else [])]
        reference = None
        if control_of is not None:
            from trustee_rl.settings import load_settings
            from trustee_rl.train.config import TrainConfig
            from trustee_rl.train.control import Reference, reference_settings

            check_run_kind(control_of, "train")
            reference = Reference(control_of)
            base = reference_settings(control_of).model_dump(mode="json")
            settings = load_settings(TrainConfig, base, config, overrides or [])
        else:
            settings = load_train_config(preset, config, overrides or [])
        check_run_kind(run_dir, "train")
        exists = (run_dir / STORE_FILE).exists()
        if exists and not resume:
            fail(
                f"run dir {run_dir} already holds a run: pass --resume to continue it, or choose another --run-dir"
            )
        if resume and not exists:
            fail(f"run dir {run_dir} holds no run to resume")
        from trustee_rl.train.grpo import Training

        training = Training(
            settings, run_dir, report=lambda line: typer.echo(line, err=True), control_of=reference
        )
        stages = training.run()
    except TrainingRefused as error:
        fail(one_line(error))
    except known_errors() as error:
        fail(one_line(error))
    if training.ranks.is_main:  # one table, however many processes trained
        _print_stages(stages, run_dir)


def _print_stages(stages: dict[str, Any], run_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from trustee_rl.heldout import RATES, format_interval, format_test, score_intervals, stage_tests
    from trustee_rl.schema import HeldoutScores

    table = Table(
        title=f"held-out first replies ({run_dir})",
        caption="In brackets: the 95% interval (Wilson; a bootstrap over tasks for argument"
        " accuracy). Below each stage after the first: its paired test against the stage before"
        " on the same tasks (McNemar exact: +tasks gained/−tasks lost; a paired bootstrap for"
        " argument accuracy).",
    )
    table.add_column("stage")
    table.add_column("tasks", justify="right")
    for column in RATES:
        table.add_column(column.replace("_", " "), justify="right")
    previous: HeldoutScores | None = None
    for name, stage in stages.items():
        if stage.scores is None:
            continue
        intervals = score_intervals(stage.scores)
        table.add_row(
            name,
            str(stage.scores.tasks),
            *(
                f"{getattr(stage.scores, c):.1%}"
                + (f" {format_interval(intervals[c])}" if c in intervals else "")
                for c in RATES
            ),
        )
        tested = stage_tests(previous, stage.scores) if previous is not None else None
        if tested is not None:
            table.add_row(
                "", f"{tested.paired} paired", *(format_test(tested.tests[c]) for c in RATES)
            )
        previous = stage.scores
    Console().print(table)
    typer.echo(f"final checkpoint: {run_dir / 'final'}")
