"""Evaluation results: one SQLite cache per output dir, and one summary file per model.

Every scored item is stored as soon as it is scored, keyed by (model, benchmark, category, entry,
trial), so an interrupted evaluation resumes where it stopped and a finished one is free to re-run.
`summary.json` holds each benchmark's headline figures, which `trustee eval compare` reads.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

Item = TypeVar("Item")

CACHE_FILE = "results.sqlite"
SUMMARY_FILE = "summary.json"

_SCHEMA = """
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


class ResultCache:
    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / CACHE_FILE
        self._db = sqlite3.connect(self.path)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise ValueError(f"{self.path} is not an evaluation cache: {error}") from error

    def get(
        self, model: str, benchmark: str, category: str, entry: str, trial: int = 0
    ) -> tuple[float, dict[str, Any]] | None:
        row = self._db.execute(
            "SELECT score, record FROM results WHERE model=? AND benchmark=? AND category=?"
            " AND entry=? AND trial=?",
            (model, benchmark, category, entry, trial),
        ).fetchone()
        return None if row is None else (float(row[0]), json.loads(row[1]))

    def put(
        self,
        model: str,
        benchmark: str,
        category: str,
        entry: str,
        score: float,
        record: dict[str, Any],
        trial: int = 0,
    ) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?)",
                (model, benchmark, category, entry, trial, score, json.dumps(record)),
            )

    def close(self) -> None:
        self._db.close()


def read_summary(out: Path) -> dict[str, Any]:
    path = out / SUMMARY_FILE
    if not path.is_file():
        return {}
    summary: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return summary


def update_summary(out: Path, model: str, benchmark: str, figures: dict[str, Any]) -> None:
    """Record `figures` for `benchmark`, keeping other benchmarks' figures already in the file.
    Refuses to mix models in one output dir, since compare reads one model per dir."""
    out.mkdir(parents=True, exist_ok=True)
    summary = read_summary(out)
    if summary.get("model", model) != model:
        raise ValueError(
            f"{out} holds results of {summary['model']!r}, not {model!r}: use another --out"
        )
    summary["model"] = model
    summary.setdefault("benchmarks", {})[benchmark] = figures
    temporary = out / (SUMMARY_FILE + ".tmp")
    temporary.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    temporary.replace(out / SUMMARY_FILE)


async def gather_bounded(
    items: Sequence[Item], concurrency: int, work: Callable[[Item], Awaitable[None]]
) -> None:
    """`work` on every item, at most `concurrency` at a time (items start in order)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(item: Item) -> None:
        async with gate:
            await work(item)

    await asyncio.gather(*(one(item) for item in items))
