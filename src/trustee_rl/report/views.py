"""The report's sections as plain values for the templates: cards, charts, rates and rows.

Success has one meaning here, as everywhere: `Verdict.succeeded`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime
from statistics import fmean
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from trustee_rl.curriculum import ORDINAL_ASPECTS, AspectStats, Curriculum, CurriculumConfig
from trustee_rl.heldout import RATES, StageTests, score_intervals, stage_tests
from trustee_rl.report.charts import PALETTE, Chart, Point, Series, line_chart, rate_color
from trustee_rl.report.data import RunData
from trustee_rl.schema import Episode, HeldoutScores, StageRecord, Task, Verdict
from trustee_rl.stats import Interval

# The browser holds full conversations; beyond this many episodes the file would get unwieldy.
BROWSER_CAP = 500
PROGRESS_CHUNKS = 5
CONFIG_KEYS = ("policy", "simulator", "seed", "episodes")
# Held-out scores shown per stage: every rate HeldoutScores has (`tasks` is the count they are of).
STAGE_COLUMNS = {name: HeldoutScores.model_fields[name].description or name for name in RATES}

AspectTable = dict[str, dict[str, AspectStats]]
_ASPECT_TABLE = TypeAdapter(AspectTable)
EpisodeState = Literal["scored", "unscored", "pending"]


@dataclass(frozen=True)
class Page:
    """Everything `page.html.j2` shows, section by section."""

    title: str
    run_path: str
    generated: str
    cards: list[tuple[str, str]]
    config: dict[str, Any]
    config_rows: list[tuple[str, Any]]
    charts: list[Chart]
    aspects: Aspects
    criteria: Criteria
    stages: Stages | None
    unscored: list[tuple[str, list[int]]]
    browser: Browser


def page(data: RunData, browser_cap: int = BROWSER_CAP) -> Page:
    return Page(
        title=f"trustee-rl report: {data.run_dir.name or data.run_dir}",
        run_path=str(data.run_dir.resolve()),
        generated=datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
        cards=_cards(data),
        config=data.config,
        config_rows=[(key, data.config[key]) for key in CONFIG_KEYS if key in data.config],
        charts=_charts(data),
        aspects=_aspects(data),
        criteria=_criteria(data),
        stages=_stages(data),
        unscored=_unscored(data),
        browser=_browser(data, browser_cap),
    )


# -- overview --------------------------------------------------------------------------------------


def _cards(data: RunData) -> list[tuple[str, str]]:
    summary = data.summary
    scored = summary["scored"]
    succeeded = sum(verdict.succeeded for verdict in data.verdicts.values())
    mean = summary["mean_reward"]
    cards = [
        ("episodes", str(summary["episodes"])),
        ("scored", str(scored)),
        ("unscored", str(summary["unscored"])),
        ("succeeded", f"{succeeded} ({succeeded / scored:.0%})" if scored else str(succeeded)),
        ("mean reward", "n/a" if mean is None else f"{mean:+.2f}"),
        ("tasks", str(summary["tasks"])),
    ]
    pending = summary["episodes"] - scored - summary["unscored"]
    if pending:
        cards.append(("pending", str(pending)))
    return cards


# -- curves ----------------------------------------------------------------------------------------


def _charts(data: RunData) -> list[Chart]:
    series: dict[str, list[Point]] = {}
    for step, name, value in data.metrics:
        series.setdefault(name, []).append((step, value))
    charts = [
        line_chart(
            name,
            [Series(name, points, PALETTE[number % len(PALETTE)])],
            x_label="step",
            y_label=name,
        )
        for number, (name, points) in enumerate(sorted(series.items()))
    ]
    charts.append(_curriculum_chart(data.curriculum))
    charts.append(_reward_chart(data.scored()))
    return charts


def _curriculum_chart(states: list[tuple[int, dict[str, Any]]]) -> Chart:
    # The latest state carries the whole history of D; older stores only have one level per row.
    history = (states[-1][1].get("history") if states else None) or []
    points: list[Point] = (
        [(number, level) for number, level in enumerate(history, start=1)]
        if history
        else [(step + 1, state.get("level")) for step, state in states]
    )
    return line_chart(
        "curriculum level D",
        [Series("D", points, PALETTE[1])],
        x_label="curriculum update",
        y_label="D",
    )


def _reward_chart(scored: list[tuple[Episode, Verdict]]) -> Chart:
    points = [(float(episode.index), verdict.reward or 0.0) for episode, verdict in scored]
    window = max(3, min(100, len(points) // 20))
    rewards = [reward for _, reward in points]
    average: list[Point] = [
        (index, fmean(rewards[max(0, i - window + 1) : i + 1]))
        for i, (index, _) in enumerate(points)
    ]
    return line_chart(
        "reward per episode",
        [
            Series("reward", points, PALETTE[0], line=False),
            Series(f"moving avg ({window})", average, PALETTE[4], markers=False),
        ],
        x_label="episode index",
        y_label="reward",
    )


# -- per-aspect success ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AspectRow:
    value: str
    episodes: int
    success_rate: float
    mean_reward: float | None


@dataclass(frozen=True)
class Aspects:
    origin: str
    table: dict[str, list[AspectRow]]


def _aspects(data: RunData) -> Aspects:
    table, origin = _aspect_table(data)
    return Aspects(
        origin=origin,
        table={
            aspect: [
                AspectRow(
                    value,
                    stats.episodes,
                    stats.successes / stats.episodes if stats.episodes else 0.0,
                    stats.mean_reward,
                )
                for value, stats in sorted(
                    values.items(), key=lambda item: _aspect_order(aspect, item[0])
                )
            ]
            for aspect, values in table.items()
        },
    )


def _aspect_table(data: RunData) -> tuple[AspectTable, str]:
    """Per-aspect stats from the latest curriculum state, else recomputed from tasks + verdicts."""
    if data.curriculum:
        step, state = data.curriculum[-1]
        try:
            table = _ASPECT_TABLE.validate_python(state.get("aspect_stats") or {})
        except ValidationError:
            table = {}
        if table:
            return table, f"from the curriculum state after update {step + 1}"
    curriculum = Curriculum(CurriculumConfig())
    for episode, verdict in data.scored():
        task = data.tasks.get(episode.task_id)
        if task is not None and verdict.reward is not None:
            curriculum.record(task.difficulty, verdict.reward, verdict.succeeded)
    return curriculum.state.aspect_stats, "computed from the tasks' difficulty and the verdicts"


def _aspect_order(aspect: str, value: str) -> tuple[float, str]:
    ordered = ORDINAL_ASPECTS.get(aspect, ())
    if value in ordered:
        return float(ordered.index(value)), value
    try:
        return float(value), value
    except ValueError:
        return float("inf"), value


# -- judge criteria --------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeatCell:
    rate: float | None
    seen: int

    @property
    def color(self) -> str:
        return rate_color(self.rate or 0.0)


@dataclass(frozen=True)
class CriterionRow:
    name: str
    sources: str
    seen: int
    rate: float
    cells: list[HeatCell]


@dataclass(frozen=True)
class Criteria:
    scored: int
    chunks: list[str]
    rows: list[CriterionRow]


def _criteria(data: RunData) -> Criteria:
    """Pass rates overall, then per chunk of scored episodes in index order (training progress)."""
    scored = data.scored()
    chunks = _chunks(len(scored), PROGRESS_CHUNKS)
    sources: dict[str, set[str]] = {}
    passed: dict[str, list[int]] = {}
    seen: dict[str, list[int]] = {}
    for number, (start, end) in enumerate(chunks):
        for _, verdict in scored[start:end]:
            for result in verdict.criteria:
                sources.setdefault(result.name, set()).add(result.source)
                seen.setdefault(result.name, [0] * len(chunks))[number] += 1
                passed.setdefault(result.name, [0] * len(chunks))[number] += int(result.passed)
    rows = [
        CriterionRow(
            name=name,
            sources=", ".join(sorted(sources[name])),
            seen=sum(seen[name]),
            rate=sum(passed[name]) / sum(seen[name]),
            cells=[
                HeatCell(p / s if s else None, s)
                for p, s in zip(passed[name], seen[name], strict=True)
            ],
        )
        for name in seen
    ]
    labels = [f"#{scored[start][0].index}–{scored[end - 1][0].index}" for start, end in chunks]
    return Criteria(len(scored), labels, rows)


def _chunks(count: int, most: int) -> list[tuple[int, int]]:
    """Split range(count) into up to `most` contiguous, nearly equal (start, end) chunks."""
    parts = min(count, most)
    if parts == 0:
        return []
    bounds = [round(i * count / parts) for i in range(parts + 1)]
    return list(itertools.pairwise(bounds))


# -- held-out stages -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageRow:
    record: StageRecord
    # Change of each rate since the previous stage that has scores, so each stage's own
    # contribution shows (the warm start's gain is not credited to GRPO).
    change: dict[str, float]
    # Each rate's 95 % interval, and its paired test against that previous stage on the same
    # tasks (None where either stage predates per-task outcomes).
    intervals: dict[str, Interval]
    tests: StageTests | None


@dataclass(frozen=True)
class Stages:
    columns: dict[str, str]
    rows: list[StageRow]
    heldout_tasks: list[Task]


def _stages(data: RunData) -> Stages | None:
    if not data.stages and not data.heldout_tasks:
        return None
    rows = []
    previous: HeldoutScores | None = None
    for record in data.stages.values():
        change = {}
        tests = None
        if record.scores is not None and previous is not None:
            change = {
                name: getattr(record.scores, name) - getattr(previous, name)
                for name in STAGE_COLUMNS
            }
            tests = stage_tests(previous, record.scores)
        intervals = score_intervals(record.scores) if record.scores is not None else {}
        rows.append(StageRow(record, change, intervals, tests))
        previous = record.scores or previous
    return Stages(STAGE_COLUMNS, rows, data.heldout_tasks)


# -- unscored and the episode browser --------------------------------------------------------------


def _unscored(data: RunData) -> list[tuple[str, list[int]]]:
    """(reason, episode indices) of judged-but-unscored episodes, most frequent reason first."""
    by_reason: dict[str, list[int]] = {}
    for episode in data.episodes:
        verdict = data.verdicts.get(episode.id)
        if verdict is not None and not verdict.scored:
            reason = verdict.unscored_reason or "(no reason given)"
            by_reason.setdefault(reason, []).append(episode.index)
    return sorted(by_reason.items(), key=lambda item: (-len(item[1]), item[0]))


@dataclass(frozen=True)
class EpisodeView:
    episode: Episode
    task: Task | None
    verdict: Verdict | None

    @property
    def state(self) -> EpisodeState:
        if self.verdict is None:
            return "pending"
        return "scored" if self.verdict.scored else "unscored"


@dataclass(frozen=True)
class Browser:
    episodes: list[EpisodeView]
    total: int

    @property
    def shown(self) -> set[int]:
        """Indices of the episodes the browser holds, which other sections may link to."""
        return {view.episode.index for view in self.episodes}


def _browser(data: RunData, cap: int) -> Browser:
    return Browser(
        episodes=[
            EpisodeView(episode, data.tasks.get(episode.task_id), data.verdicts.get(episode.id))
            for episode in data.episodes[:cap]
        ],
        total=len(data.episodes),
    )
