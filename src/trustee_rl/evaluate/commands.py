"""`trustee eval`: benchmarks for any model, and their side-by-side comparison.

Every evaluation writes into one output dir per model: `results.sqlite` (each scored item, so a
re-run resumes) and `summary.json` (the headline figures that `trustee eval compare` reads).
Every command also takes its settings from `--config FILE.yaml` and `--set key=value`
(evaluate/config.py).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from trustee_rl.cli_common import fail, known_errors, local_runtime, one_line

if TYPE_CHECKING:
    from pydantic import BaseModel

    from trustee_rl.evaluate.config import ModelSettings
    from trustee_rl.policy.base import Policy

    Settings = TypeVar("Settings", bound=BaseModel)

# tau2's own default (`tau2.config.DEFAULT_MAX_STEPS`), written out because tau2 loads slowly.
TAU2_MAX_STEPS = 200

eval_app = typer.Typer(
    help="Evaluate a model on BFCL v4, a held-out simulated benchmark or tau2-bench; compare models.",
    no_args_is_help=True,
)


@eval_app.callback()
def _runtime() -> None:
    local_runtime()


ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="'embedded', a Hugging Face checkpoint dir (such as RUN_DIR/final), a hub id, a "
        ".gguf file, or an http(s):// OpenAI-compatible server URL",
    ),
]
ModelNameOption = Annotated[
    str | None, typer.Option("--model-name", help="model name on the server (URL models)")
]
OutOption = Annotated[
    Path | None,
    typer.Option(help="output dir for this model's results (default: evals/<model label>)"),
]
MaxTokensOption = Annotated[
    int, typer.Option(min=1, help="most tokens the model may write per turn")
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="YAML file of settings: the options' names with underscores, and concurrency",
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="override one setting, e.g. --set concurrency=4 (repeatable)"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print the figures as JSON")]


def _settings(
    ctx: typer.Context,
    model: type[Settings],
    config: Path | None,
    overrides: list[str] | None,
    nested: Mapping[str, str] | None = None,
) -> Settings:
    """The command's settings: its flags' defaults, the file, the flags given, each --set.
    `nested` names the flags that set one key of a mapping setting (judge -> judge.mode), so a
    file or --set that changes another key of it keeps the flag's."""
    from trustee_rl.evaluate.config import command_settings

    defaults: dict[str, Any] = {}
    given: dict[str, Any] = {}
    for name, value in ctx.params.items():
        if name not in model.model_fields:
            continue
        if nested and name in nested and value is not None:
            value = {nested[name]: value}
        source = ctx.get_parameter_source(name)
        # Compared by name: typer vendors its own copy of click's ParameterSource.
        if source is not None and source.name == "COMMANDLINE":
            given[name] = value
        elif value is not None:
            defaults[name] = value
    try:
        return command_settings(model, defaults, given, config, overrides or [])
    except known_errors() as error:
        fail(one_line(error))


def _open_policy(settings: ModelSettings) -> Policy:
    """The model under evaluation, decoding greedily."""
    from trustee_rl.policy.factory import open_policy

    try:
        return open_policy(
            settings.model,
            model_name=settings.model_name,
            max_new_tokens=settings.max_tokens,
            temperature=0.0,
        )
    except known_errors(OSError) as error:
        fail(one_line(error))


def _run_and_show(
    run: Callable[[], Coroutine[Any, Any, dict[str, Any]]],
    as_json: bool,
    show: Callable[[dict[str, Any]], None],
    out: Path,
) -> None:
    """Run an evaluation, then print its figures as JSON or as `show` draws them."""
    try:
        figures = asyncio.run(run())
    except known_errors(OSError) as error:
        fail(one_line(error))
    if as_json:
        typer.echo(json.dumps(figures, indent=2))
    else:
        show(figures)
    typer.echo(f"results: {out}", err=True)


def _default_out(label: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label).strip("_")
    return Path("evals") / safe


@eval_app.command()
def bfcl(
    ctx: typer.Context,
    model: ModelOption = None,
    model_name: ModelNameOption = None,
    categories: Annotated[
        str,
        typer.Option(
            help="comma-separated BFCL categories or groups (non_live, live, multi_turn, all)"
        ),
    ] = "all",
    limit: Annotated[
        int | None, typer.Option(min=1, help="first N entries of each category")
    ] = None,
    out: OutOption = None,
    max_tokens: MaxTokensOption = 256,
    config: ConfigOption = None,
    overrides: SetOption = None,
    as_json: JsonOption = False,
) -> None:
    """BFCL v4 offline: BFCL's own data, tool conversion and checkers, our policy's rendering."""
    from trustee_rl.evaluate.config import BfclSettings
    from trustee_rl.evaluate.tables import print_bfcl

    settings = _settings(ctx, BfclSettings, config, overrides)
    # bfcl_eval itself is imported later, once its project root is set, so look for it here.
    if importlib.util.find_spec("bfcl_eval") is None:
        fail("BFCL needs the evaluation extras: run `bash scripts/setup.sh --eval`")
    from trustee_rl.evaluate.bfcl import evaluate_bfcl, resolve_categories

    try:
        chosen, skipped = resolve_categories(settings.categories)
    except ValueError as error:
        fail(one_line(error))
    for line in skipped:
        typer.echo(line, err=True)
    if not chosen:
        fail("no offline BFCL category left to run")
    policy = _open_policy(settings)
    out_dir = settings.out or _default_out(policy.name)

    async def run() -> dict[str, Any]:
        try:
            return await evaluate_bfcl(
                policy, out_dir, chosen, settings.limit, concurrency=settings.concurrency
            )
        finally:
            await policy.aclose()

    _run_and_show(run, as_json, lambda summary: print_bfcl(summary, policy.name), out_dir)


@eval_app.command()
def sim(
    ctx: typer.Context,
    model: ModelOption = None,
    run_dir: Annotated[
        Path | None,
        typer.Option(help="a training run: evaluate on the held-out tasks it froze"),
    ] = None,
    tasks: Annotated[
        Path | None,
        typer.Option(
            help="frozen tasks (JSONL); written from --seed/--n first when it does not exist"
        ),
    ] = None,
    model_name: ModelNameOption = None,
    seed: Annotated[int, typer.Option(help="seed for writing new tasks and for the episodes")] = 0,
    n: Annotated[
        int | None, typer.Option("--n", min=1, help="tasks to write when --tasks is new")
    ] = None,
    split_seed: Annotated[
        int,
        typer.Option(help="for new tasks: the training run's seed (its held-out catalog domains)"),
    ] = 0,
    holdout_fraction: Annotated[
        float,
        typer.Option(min=0.01, max=0.99, help="for new tasks: the training run's held-out share"),
    ] = 0.2,
    level: Annotated[
        float | None,
        typer.Option(min=1, max=100, help="difficulty of new tasks (default 1)"),
    ] = None,
    max_level: Annotated[
        float | None,
        typer.Option(
            min=1,
            max=100,
            help="new tasks spread evenly over difficulty 1..MAX_LEVEL, as training spreads its "
            "held-out set: with --seed set to a run's eval.seed (default 1000003), --max-level to "
            "its eval.max_level (default 40; the cpu preset's 30), --split-seed to its seed, "
            "--holdout-fraction to its eval.holdout_fraction and --set taskgen.KEY=VALUE to its "
            "taskgen (the cpu preset's: taskgen.request_writer=template), the tasks begin with "
            "that run's held-out tasks, so --n at least its eval.tasks gives a superset of them "
            "(the same simulator and curriculum settings assumed)",
        ),
    ] = None,
    first_turns: Annotated[
        bool,
        typer.Option(
            "--first-turns",
            help="grade only each task's first reply, as training's held-out check does (it "
            "reads 160 tokens: --max-tokens 160), with no simulated user or tool; kept apart "
            "from whole-episode results",
        ),
    ] = False,
    simulator: Annotated[
        str, typer.Option(help="'embedded' or the URL of an OpenAI-compatible server")
    ] = "embedded",
    simulator_model: Annotated[str | None, typer.Option(help="model name on that server")] = None,
    judge: Annotated[
        str,
        typer.Option(
            help="'rules' or 'lm' (rules + simulator rubric): judge.mode; the reward mode is "
            "--set judge.reward=levels|graded|synth"
        ),
    ] = "rules",
    out: OutOption = None,
    max_tokens: MaxTokensOption = 256,
    config: ConfigOption = None,
    overrides: SetOption = None,
    as_json: JsonOption = False,
) -> None:
    """A held-out simulated benchmark: whole episodes (or first replies alone) on frozen tasks from
    unseen catalog domains."""
    from trustee_rl.evaluate.config import SimSettings
    from trustee_rl.evaluate.simtasks import (
        first_reply_policy,
        frozen_tasks,
        held_out_environment,
        write_tasks,
        write_tasks_alone,
    )

    settings = _settings(ctx, SimSettings, config, overrides, nested={"judge": "mode"})
    frozen = frozen_tasks(settings)  # before the model loads
    from trustee_rl.evaluate.simbench import DEFAULT_CONCURRENCY, evaluate_first_turns, evaluate_sim
    from trustee_rl.evaluate.tables import print_scores
    from trustee_rl.heldout import CHUNK

    policy = _open_policy(settings)
    out_dir = settings.out or _default_out(policy.name)

    async def run() -> dict[str, Any]:
        try:
            if settings.first_turns:
                # No simulator is opened unless new tasks are to be written.
                tasks = frozen if frozen is not None else await write_tasks_alone(settings)
                return await evaluate_first_turns(
                    first_reply_policy(policy),
                    tasks,
                    out_dir,
                    concurrency=settings.concurrency or CHUNK,
                )
            async with held_out_environment(settings) as environment:
                tasks = frozen if frozen is not None else await write_tasks(settings, environment)
                return await evaluate_sim(
                    policy,
                    tasks,
                    environment,
                    out_dir,
                    seed=settings.seed,
                    concurrency=settings.concurrency or DEFAULT_CONCURRENCY,
                )
        finally:
            await policy.aclose()

    def show(figures: dict[str, Any]) -> None:
        if settings.first_turns:
            _show_first_turns(figures, policy.name)
            return
        title = f"simulated benchmark — {policy.name} ({figures['episodes']} tasks)"
        print_scores(title, figures["scores"])

    _run_and_show(run, as_json, show, out_dir)


def _show_first_turns(figures: dict[str, Any], model: str) -> None:
    from trustee_rl.evaluate.tables import print_scores

    print_scores(f"first turns — {model} ({figures['replies']} tasks)", figures["scores"])
    intervals = ", ".join(
        f"{name} [{100 * bounds['low']:.1f}, {100 * bounds['high']:.1f}]"
        for name, bounds in figures["intervals"].items()
    )
    typer.echo(f"95 % intervals: {intervals}")
    if figures["problems"]:
        problems = ", ".join(f"{kind} {count}" for kind, count in figures["problems"].items())
        typer.echo(f"no valid call: {problems}")


@eval_app.command()
def tau2(
    ctx: typer.Context,
    model: ModelOption = None,
    model_name: ModelNameOption = None,
    domains: Annotated[
        str, typer.Option(help="comma-separated: airline, retail, telecom")
    ] = "airline,retail",
    split: Annotated[
        str, typer.Option(help="tau2 task split: 'test', 'train' or 'base' (all tasks)")
    ] = "test",
    trials: Annotated[
        int, typer.Option(min=1, help="episodes per task; pass^k for k ≤ trials")
    ] = 1,
    user_simulator: Annotated[
        str,
        typer.Option(
            help="who plays tau2's customer: 'embedded' or an OpenAI-compatible server URL"
        ),
    ] = "embedded",
    user_model: Annotated[str | None, typer.Option(help="model name on that server")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="first N tasks of each domain")] = None,
    max_steps: Annotated[
        int,
        typer.Option(
            min=1, help="messages (tool calls included) after which an episode ends, scoring 0"
        ),
    ] = TAU2_MAX_STEPS,
    out: OutOption = None,
    max_tokens: MaxTokensOption = 256,
    config: ConfigOption = None,
    overrides: SetOption = None,
    as_json: JsonOption = False,
) -> None:
    """tau2-bench offline: tau2's orchestrator, user simulator and standard score; our policy."""
    from trustee_rl.evaluate.config import Tau2Settings
    from trustee_rl.evaluate.tables import print_scores

    settings = _settings(ctx, Tau2Settings, config, overrides)
    try:
        from trustee_rl.evaluate.tau2 import check_arguments, evaluate_tau2
    except ImportError as error:
        fail(f"tau2 needs the evaluation extras ({error}): run `bash scripts/setup.sh --eval`")
    try:  # before the model loads
        check_arguments(
            settings.domains,
            settings.trials,
            settings.limit,
            settings.concurrency,
            settings.max_steps,
            settings.user_simulator,
        )
    except ValueError as error:
        fail(one_line(error))
    policy = _open_policy(settings)
    out_dir = settings.out or _default_out(policy.name)
    if settings.user_simulator == "embedded":
        typer.echo(
            "user simulator: the embedded SmolLM2-135M (published tau2 numbers use far stronger "
            "user models)",
            err=True,
        )

    async def run() -> dict[str, Any]:
        try:
            return await evaluate_tau2(
                policy,
                out=out_dir,
                domains=settings.domains,
                split=settings.split,
                trials=settings.trials,
                user_simulator=settings.user_simulator,
                user_model=settings.user_model,
                limit=settings.limit,
                concurrency=settings.concurrency,
                max_steps=settings.max_steps,
            )
        finally:
            await policy.aclose()

    def show(figures: dict[str, Any]) -> None:
        print_scores(f"tau2-bench — {policy.name} ({settings.split} split)", figures["scores"])

    _run_and_show(run, as_json, show, out_dir)


@eval_app.command()
def compare(
    ctx: typer.Context,
    dirs: Annotated[
        list[Path] | None, typer.Argument(help="output dirs of `trustee eval` runs")
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="SVG chart file")] = Path("comparison.svg"),
    config: ConfigOption = None,
    overrides: SetOption = None,
    as_json: JsonOption = False,
) -> None:
    """One table, and a chart, of several models across every benchmark each was evaluated on."""
    from trustee_rl.evaluate.compare import comparison, write_chart
    from trustee_rl.evaluate.config import CompareSettings
    from trustee_rl.evaluate.tables import print_comparison

    settings = _settings(ctx, CompareSettings, config, overrides)
    try:
        table = comparison(settings.dirs)
    except (ValueError, OSError, json.JSONDecodeError) as error:
        fail(one_line(error))
    if as_json:
        typer.echo(json.dumps(table, indent=2))
    else:
        print_comparison(table)
    if settings.plot is not None:
        write_chart(table, settings.plot)
        typer.echo(f"chart: {settings.plot}", err=True)
