"""The one benchmark harness: every benchmark (bfcl, sim, tau2) is a `Benchmark`, and
`run_benchmark` plays it with a policy.

A benchmark says what its items are, how to play one with a policy and score what was played, and
what its figures are. The runner owns everything else: the results cache of the output dir (each
item is stored the moment it is scored, so an interrupted run resumes with the items it had not
scored and scores none twice; items in flight when it stopped are played again), a progress bar,
bounded concurrency, and the merge of the figures into `summary.json` (the categories this run
played replace their earlier figures; other categories and other benchmarks keep theirs).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from trustee_rl.evaluate.results import (
    ItemKey,
    Result,
    ResultCache,
    check_model,
    read_summary,
    update_summary,
)
from trustee_rl.policy.base import Policy

Data = TypeVar("Data")
Outcome = TypeVar("Outcome")
Progress = Callable[[str, int, int], None]  # category, items done, items in the category

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item(Generic[Data]):
    """One thing to play: where its result is cached, and what the benchmark needs to play it."""

    key: ItemKey
    data: Data


@dataclass(frozen=True)
class Scored:
    score: float
    record: dict[str, Any]  # what happened, stored with the score


@dataclass(frozen=True)
class Unscored:
    """The item could not be judged (say, tau2's user simulator said nothing usable): nothing is
    cached, so the next run plays it again."""

    reason: str


@dataclass
class CategoryResults:
    """A category's items after a run: every scored result (cached or new), in item order."""

    category: str
    model: str  # the policy's name
    items: int
    results: list[Result]
    from_cache: int
    unscored: int  # items this run played but could not score
    wall_s: float  # seconds with at least one of the results' items in flight, over all sessions


class Benchmark(Protocol[Data, Outcome]):
    """What a benchmark says about itself; `run_benchmark` does the rest. `Data` is what an
    item carries for playing it, `Outcome` what playing it leaves for scoring."""

    name: str
    # Items played at once (a batching policy answers concurrent turns in one batch).
    concurrency: int

    @property
    def settings(self) -> Mapping[str, Any]:
        """Settings every cached result of an output dir must share (stored in each record);
        resuming with other values is refused."""
        ...

    def items(self) -> Sequence[Item[Data]]:
        """Everything to play, grouped by category, in order."""
        ...

    def session(self) -> AbstractAsyncContextManager[None]:
        """Holds what the benchmark needs while items are played (a sandbox, a user simulator)."""
        ...

    async def play(self, item: Item[Data], policy: Policy) -> Outcome: ...

    async def score(self, item: Item[Data], outcome: Outcome) -> Scored | Unscored: ...

    def category_figures(self, results: CategoryResults) -> dict[str, Any]:
        """A category's figures, once all its items are scored."""
        ...

    def figures(self, categories: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The benchmark's figures for summary.json from its categories' figures (this run's
        over earlier ones), which they keep under "categories" for the next run to merge over."""
        ...


async def run_benchmark(
    benchmark: Benchmark[Data, Outcome],
    policy: Policy,
    out: Path,
    *,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Play every item of `benchmark` not yet cached in `out` with `policy`, score it and record
    the figures in `out/summary.json`. Returns the figures. `progress` defaults to a progress bar
    on stderr."""
    check_model(out, policy.name)  # before anything runs, not after
    by_category: dict[str, list[Item[Data]]] = {}
    for item in benchmark.items():
        by_category.setdefault(item.key.category, []).append(item)
    cache = ResultCache(out)
    figures: dict[str, dict[str, Any]] = {}
    try:
        with _progress(benchmark.name, progress) as report:
            async with benchmark.session():
                for category, items in by_category.items():
                    run = _CategoryRun(benchmark, policy, cache, category, items, report)
                    figures[category] = benchmark.category_figures(await run.run())
    finally:
        cache.close()
    earlier = read_summary(out).get("benchmarks", {}).get(benchmark.name, {})
    summary = benchmark.figures({**earlier.get("categories", {}), **figures})
    update_summary(out, policy.name, benchmark.name, summary)
    return summary


class _CategoryRun(Generic[Data, Outcome]):
    def __init__(
        self,
        benchmark: Benchmark[Data, Outcome],
        policy: Policy,
        cache: ResultCache,
        category: str,
        items: list[Item[Data]],
        report: Progress,
    ) -> None:
        self.benchmark = benchmark
        self.policy = policy
        self.cache = cache
        self.category = category
        self.items = items
        self.report = report
        self.results: dict[ItemKey, Result] = {}
        self.unscored = 0

    async def run(self) -> CategoryResults:
        todo = [item for item in self.items if not self._load_cached(item.key)]
        from_cache = len(self.results)
        self._report()
        await for_each(todo, self.benchmark.concurrency, self._play)
        results = [self.results[item.key] for item in self.items if item.key in self.results]
        spans = [
            (result.started_at, result.finished_at)
            for result in results
            if result.started_at is not None and result.finished_at is not None
        ]
        return CategoryResults(
            self.category,
            self.policy.name,
            len(self.items),
            results,
            from_cache,
            self.unscored,
            round(busy_seconds(spans), 3),
        )

    def _load_cached(self, key: ItemKey) -> bool:
        hit = self.cache.get(self.policy.name, self.benchmark.name, key)
        if hit is None:
            return False
        for name, value in self.benchmark.settings.items():
            if hit.record.get(name) != value:
                raise ValueError(
                    f"cached {self.benchmark.name} {key.category} item {key.entry} trial"
                    f" {key.trial} was run with {name.replace('_', ' ')} {hit.record.get(name)!r},"
                    f" not {value!r}: use another --out"
                )
        self.results[key] = hit
        return True

    async def _play(self, item: Item[Data]) -> None:
        started = time.time()
        outcome = await self.benchmark.play(item, self.policy)
        verdict = await self.benchmark.score(item, outcome)
        if isinstance(verdict, Unscored):
            self.unscored += 1
            _log.warning(
                "%s %s item %s trial %d unscored: %s",
                self.benchmark.name,
                item.key.category,
                item.key.entry,
                item.key.trial,
                verdict.reason,
            )
        else:
            record = {**self.benchmark.settings, **verdict.record}
            result = Result(item.key, verdict.score, record, started, time.time())
            self.cache.put(self.policy.name, self.benchmark.name, result)
            self.results[item.key] = result
        self._report()

    def _report(self) -> None:
        self.report(self.category, len(self.results) + self.unscored, len(self.items))


Work = TypeVar("Work")


async def for_each(
    items: Sequence[Work], concurrency: int, work: Callable[[Work], Awaitable[None]]
) -> None:
    """`work` on every item, at most `concurrency` at a time, items started in order. The first
    failure stops the rest (cancelled where they wait) and is raised."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    pending = iter(items)
    failures: list[Exception] = []

    async def worker() -> None:
        for item in pending:  # shared: each item is taken by exactly one worker
            try:
                await work(item)
            except Exception as error:
                failures.append(error)
                raise

    workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, len(items)))]
    if not workers:
        return
    try:
        await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
    finally:  # a failure, or the caller was cancelled: stop whatever still runs
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    if failures:
        raise failures[0]


def busy_seconds(spans: Iterable[tuple[float, float]]) -> float:
    """Seconds during which at least one of the (start, end) spans was running: the wall time
    items took, counted the same whether they ran in one session or in several resumed ones."""
    ordered = sorted(spans)
    if not ordered:
        return 0.0
    total = 0.0
    busy_from, busy_until = ordered[0]
    for start, end in ordered[1:]:
        if start > busy_until:
            total += busy_until - busy_from
            busy_from, busy_until = start, end
        else:
            busy_until = max(busy_until, end)
    return total + busy_until - busy_from


@contextmanager
def _progress(title: str, given: Progress | None) -> Iterator[Progress]:
    """`given`, or one bar per category on stderr (stdout stays clean for --json)."""
    if given is not None:
        yield given
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TimeElapsedColumn
    from rich.progress import Progress as RichProgress

    with RichProgress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    ) as bars:
        tasks: dict[str, Any] = {}

        def update(category: str, done: int, total: int) -> None:
            if category not in tasks:
                tasks[category] = bars.add_task(f"{title} {category}", total=total)
            bars.update(tasks[category], completed=done, total=total)

        yield update
