"""The benchmark harness: resume after an interruption, the merge into summary.json, the results
cache's migrations. A small benchmark asks a real policy (an OpenAI-compatible loopback server)
to echo each item."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from trustee_rl.evaluate.harness import (
    CategoryResults,
    Item,
    Scored,
    Unscored,
    busy_seconds,
    run_benchmark,
)
from trustee_rl.evaluate.results import (
    CACHE_FILE,
    MIGRATIONS,
    ItemKey,
    ResultCache,
    read_summary,
    update_summary,
)
from trustee_rl.lm.serve import Reply
from trustee_rl.policy.base import Conversation, Policy
from trustee_rl.policy.factory import open_policy
from trustee_rl.schema import Message
from trustee_rl.testing.openai_server import LoopbackOpenAIServer

ROOT = Path(__file__).resolve().parent.parent
# The cache's schema before its migrations were numbered, as trustee-rl wrote it.
FIRST_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    model TEXT NOT NULL,
    benchmark TEXT NOT NULL,
    category TEXT NOT NULL,
    entry TEXT NOT NULL,
    trial INTEGER NOT NULL,
    score REAL NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (model, benchmark, category, entry, trial)
)
"""


def echo(request: dict[str, Any]) -> Reply:
    return Reply(content="echo " + request["messages"][-1]["content"])


class EchoBenchmark:
    """Items are names; the policy is asked to echo each one, and scores 1 when it does."""

    name = "echo"

    def __init__(
        self,
        categories: dict[str, int],
        *,
        concurrency: int = 1,
        fail_at: str | None = None,
        unscorable: frozenset[str] = frozenset(),
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.categories = categories
        self.concurrency = concurrency
        self.fail_at = fail_at
        self.unscorable = unscorable
        self.settings = settings or {}

    def items(self) -> list[Item[str]]:
        return [
            Item(ItemKey(category, f"{category}-{number}"), f"{category}-{number}")
            for category, count in self.categories.items()
            for number in range(count)
        ]

    @asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        yield

    async def play(self, item: Item[str], policy: Policy) -> Message:
        if item.data == self.fail_at:
            raise RuntimeError(f"interrupted at {item.data}")
        conversation = Conversation([Message(role="user", content=item.data)], [], key=item.data)
        (reply,) = await policy.act([conversation])
        return reply

    async def score(self, item: Item[str], outcome: Message) -> Scored | Unscored:
        if item.data in self.unscorable:
            return Unscored("no verdict")
        return Scored(float(item.data in (outcome.content or "")), {"reply": outcome.content})

    def category_figures(self, results: CategoryResults) -> dict[str, Any]:
        return {
            "accuracy": sum(r.score for r in results.results) / results.items,
            "scored": len(results.results),
            "from_cache": results.from_cache,
            "unscored": results.unscored,
            "wall_s": results.wall_s,
        }

    def figures(self, categories: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return {
            "scores": {category: row["accuracy"] for category, row in categories.items()},
            "categories": categories,
        }


def quiet(category: str, done: int, total: int) -> None:
    """No progress bar."""


def play(benchmark: EchoBenchmark, url: str, out: Path) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        policy = open_policy(url, model_name="loopback-model")
        try:
            return await run_benchmark(benchmark, policy, out, progress=quiet)
        finally:
            await policy.aclose()

    return asyncio.run(run())


def asked(server: LoopbackOpenAIServer) -> list[str]:
    return [request["messages"][-1]["content"] for request in server.requests]


def cached(out: Path) -> dict[str, float]:
    """Each cached entry and when it started."""
    try:
        with sqlite3.connect(out / CACHE_FILE) as db:
            rows = db.execute("SELECT entry, started_at FROM results").fetchall()
    except sqlite3.OperationalError:  # not created yet
        return {}
    return {entry: started for entry, started in rows}


@pytest.fixture
def server() -> Iterator[LoopbackOpenAIServer]:
    with LoopbackOpenAIServer(echo) as running:
        yield running


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_run_stopped_by_an_exception_resumes_where_it_stopped(
    server: LoopbackOpenAIServer, tmp_path: Path, concurrency: int
) -> None:
    items = [f"a-{n}" for n in range(10)]
    with pytest.raises(RuntimeError, match="interrupted at a-6"):
        play(
            EchoBenchmark({"a": 10}, concurrency=concurrency, fail_at="a-6"),
            server.base_url,
            tmp_path,
        )
    before = cached(tmp_path)
    if concurrency == 1:
        assert sorted(before) == items[:6]
    assert "a-6" not in before
    first = len(server.requests)

    figures = play(EchoBenchmark({"a": 10}, concurrency=concurrency), server.base_url, tmp_path)

    again = asked(server)[first:]
    assert sorted(again) == sorted(set(items) - set(before))  # each item not scored, once
    assert {entry: cached(tmp_path)[entry] for entry in before} == before  # none scored twice
    assert figures["categories"]["a"] | {"wall_s": 0} == {
        "accuracy": 1.0, "scored": 10, "from_cache": len(before), "unscored": 0, "wall_s": 0
    }  # fmt: skip


def test_a_killed_run_resumes_where_it_stopped(tmp_path: Path) -> None:
    with LoopbackOpenAIServer(echo, delay_s=0.2) as server:
        child = subprocess.Popen(
            [sys.executable, "-c", "import sys; from tests.test_eval_harness import main; main()",
             server.base_url, str(tmp_path)],
            cwd=ROOT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while len(cached(tmp_path)) < 4 and time.monotonic() < deadline:
                time.sleep(0.05)
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.wait()
        before = cached(tmp_path)
        assert 4 <= len(before) < 20
        first = len(server.requests)

        figures = play(EchoBenchmark({"slow": 20}, concurrency=2), server.base_url, tmp_path)

    again = asked(server)[first:]
    assert sorted(again) == sorted({f"slow-{n}" for n in range(20)} - set(before))
    assert {entry: cached(tmp_path)[entry] for entry in before} == before
    assert figures["scores"] == {"slow": 1.0}
    assert figures["categories"]["slow"]["from_cache"] == len(before)


def main() -> None:
    """The run the kill test interrupts: `python -c ... URL OUT`."""
    url, out = sys.argv[1:3]
    play(EchoBenchmark({"slow": 20}, concurrency=2), url, Path(out))


def test_unscored_items_are_not_cached_and_are_played_again(
    server: LoopbackOpenAIServer, tmp_path: Path
) -> None:
    first = play(EchoBenchmark({"a": 3}, unscorable=frozenset({"a-1"})), server.base_url, tmp_path)
    assert first["categories"]["a"]["unscored"] == 1
    assert first["categories"]["a"]["scored"] == 2
    count = len(server.requests)
    second = play(EchoBenchmark({"a": 3}), server.base_url, tmp_path)
    assert asked(server)[count:] == ["a-1"]
    assert second["scores"] == {"a": 1.0}


def test_the_merge_keeps_other_categories_and_other_benchmarks(
    server: LoopbackOpenAIServer, tmp_path: Path
) -> None:
    model = f"loopback-model@{server.base_url}"
    update_summary(tmp_path, model, "bfcl", {"scores": {"simple_python": 0.5}})
    play(EchoBenchmark({"a": 2}), server.base_url, tmp_path)
    play(EchoBenchmark({"b": 3}), server.base_url, tmp_path)

    summary = read_summary(tmp_path)
    assert summary["benchmarks"]["bfcl"] == {"scores": {"simple_python": 0.5}}
    assert summary["benchmarks"]["echo"]["scores"] == {"a": 1.0, "b": 1.0}
    assert summary["benchmarks"]["echo"]["categories"]["a"]["scored"] == 2
    assert summary["model"] == model


def test_another_models_dir_and_other_settings_are_refused_before_playing(
    server: LoopbackOpenAIServer, tmp_path: Path
) -> None:
    play(EchoBenchmark({"a": 1}, settings={"flavour": "plain"}), server.base_url, tmp_path)
    count = len(server.requests)
    with pytest.raises(ValueError, match="was run with flavour 'plain', not 'spicy'"):
        play(EchoBenchmark({"a": 2}, settings={"flavour": "spicy"}), server.base_url, tmp_path)
    update_summary(tmp_path / "other", "someone-else", "echo", {"scores": {}})
    with pytest.raises(ValueError, match="holds results of 'someone-else'"):
        play(EchoBenchmark({"a": 1}), server.base_url, tmp_path / "other")
    assert len(server.requests) == count


def test_a_cache_of_the_first_schema_is_migrated_and_kept(
    server: LoopbackOpenAIServer, tmp_path: Path
) -> None:
    model = f"loopback-model@{server.base_url}"
    start, end = "2026-05-01T10:00:00.250000", "2026-05-01T10:00:30.750000"
    episode = {"reward": 1.0, "simulation": {"start_time": start, "end_time": end}}
    with sqlite3.connect(tmp_path / CACHE_FILE) as db:
        db.execute(FIRST_SCHEMA)
        db.executemany(
            "INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (model, "tau2", "airline", "0", 0, 1.0, json.dumps(episode)),
                (model, "echo", "a", "a-0", 0, 1.0, json.dumps({"reply": "echo a-0"})),
            ],
        )
    db.close()

    cache = ResultCache(tmp_path)
    try:
        tau2 = cache.get(model, "tau2", ItemKey("airline", "0"))
        echoed = cache.get(model, "echo", ItemKey("a", "a-0"))
    finally:
        cache.close()
    assert tau2 is not None and tau2.record == episode
    # tau2 wrote local times; the migration turned them into Unix seconds.
    assert tau2.started_at == pytest.approx(datetime.fromisoformat(start).timestamp())
    assert tau2.finished_at == pytest.approx(datetime.fromisoformat(end).timestamp())
    assert echoed is not None and echoed.score == 1.0 and echoed.started_at is None
    with sqlite3.connect(tmp_path / CACHE_FILE) as db:
        applied = [row[0] for row in db.execute("SELECT number FROM _migrations ORDER BY number")]
    db.close()
    assert applied == list(range(1, len(MIGRATIONS) + 1))

    figures = play(EchoBenchmark({"a": 2}), server.base_url, tmp_path)
    assert asked(server) == ["a-1"]  # the item cached under the first schema is not played
    assert figures["categories"]["a"]["from_cache"] == 1


def test_a_newer_cache_or_another_file_is_refused(tmp_path: Path) -> None:
    ResultCache(tmp_path).close()
    with sqlite3.connect(tmp_path / CACHE_FILE) as db:
        db.execute("INSERT INTO _migrations VALUES (?, 0)", (len(MIGRATIONS) + 1,))
    db.close()
    with pytest.raises(ValueError, match="newer than this trustee-rl knows"):
        ResultCache(tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / CACHE_FILE).write_text("not a database, just long enough text " * 40)
    with pytest.raises(ValueError, match="is not an evaluation cache"):
        ResultCache(tmp_path / "other")


def test_wall_time_counts_seconds_with_items_in_flight_across_resumed_sessions() -> None:
    # Two overlapping items in one session, then one in a session resumed an hour later.
    assert busy_seconds([(3600, 3630), (0, 10), (5, 20)]) == 50.0
    assert busy_seconds([]) == 0.0
