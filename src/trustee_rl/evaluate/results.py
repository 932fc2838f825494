"""Evaluation results: one SQLite cache per output dir, and one summary file per model.

Every scored item is stored as soon as it is scored, keyed by (model, benchmark, category, entry,
trial), so an interrupted evaluation resumes where it stopped and a finished one is free to re-run.
`summary.json` holds each benchmark's headline figures, which `trustee eval compare` reads.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustee_rl.migrations import SchemaTooNew, migrate

CACHE_FILE = "results.sqlite"
SUMMARY_FILE = "summary.json"

# Append-only, applied by trustee_rl.migrations.
MIGRATIONS: list[tuple[str, ...]] = [
    # The first schema. Caches written before migrations were numbered already have this table.
    (
        """CREATE TABLE IF NOT EXISTS results (
            model TEXT NOT NULL,
            benchmark TEXT NOT NULL,
            category TEXT NOT NULL,
            entry TEXT NOT NULL,
            trial INTEGER NOT NULL,
            score REAL NOT NULL,
            record TEXT NOT NULL,
            PRIMARY KEY (model, benchmark, category, entry, trial)
        )""",
    ),
    # When each item was played (Unix seconds), so a benchmark's wall time counts the seconds its
    # items were in flight, however many sessions a resumed run took. tau2 records already carry
    # their episode's local start and end times; other earlier results stay untimed.
    (
        "ALTER TABLE results ADD COLUMN started_at REAL",
        "ALTER TABLE results ADD COLUMN finished_at REAL",
        """UPDATE results SET
            started_at = (julianday(json_extract(record, '$.simulation.start_time'), 'utc')
                          - 2440587.5) * 86400.0,
            finished_at = (julianday(json_extract(record, '$.simulation.end_time'), 'utc')
                           - 2440587.5) * 86400.0
        WHERE benchmark = 'tau2'""",
    ),
]


@dataclass(frozen=True)
class ItemKey:
    """Which result: a benchmark item (an entry of a category) and which trial of it."""

    category: str
    entry: str
    trial: int = 0


@dataclass(frozen=True)
class Result:
    """One scored item as cached."""

    key: ItemKey
    score: float
    record: dict[str, Any]
    started_at: float | None = None
    finished_at: float | None = None


class ResultCache:
    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / CACHE_FILE
        self._db = sqlite3.connect(self.path, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._migrate()
        except BaseException as error:
            self._db.close()
            if isinstance(error, sqlite3.DatabaseError):
                raise ValueError(f"{self.path} is not an evaluation cache: {error}") from error
            raise

    def _migrate(self) -> None:
        try:
            migrate(self._db, MIGRATIONS, str(self.path))
        except SchemaTooNew as error:
            raise ValueError(str(error)) from error

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction; the write lock is taken up front so it never fails midway."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def get(self, model: str, benchmark: str, key: ItemKey) -> Result | None:
        row = self._db.execute(
            "SELECT score, record, started_at, finished_at FROM results"
            " WHERE model=? AND benchmark=? AND category=? AND entry=? AND trial=?",
            (model, benchmark, key.category, key.entry, key.trial),
        ).fetchone()
        if row is None:
            return None
        return Result(key, float(row[0]), json.loads(row[1]), row[2], row[3])

    def put(self, model: str, benchmark: str, result: Result) -> None:
        key = result.key
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO results (model, benchmark, category, entry, trial, score,"
                " record, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    model,
                    benchmark,
                    key.category,
                    key.entry,
                    key.trial,
                    result.score,
                    json.dumps(result.record),
                    result.started_at,
                    result.finished_at,
                ),
            )

    def close(self) -> None:
        self._db.close()


def read_summary(out: Path) -> dict[str, Any]:
    path = out / SUMMARY_FILE
    if not path.is_file():
        return {}
    summary: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return summary


def check_model(out: Path, model: str) -> None:
    """Refuses to mix models in one output dir, since compare reads one model per dir."""
    earlier = read_summary(out).get("model", model)
    if earlier != model:
        raise ValueError(f"{out} holds results of {earlier!r}, not {model!r}: use another --out")


def update_summary(out: Path, model: str, benchmark: str, figures: dict[str, Any]) -> None:
    """Record `figures` for `benchmark`, keeping other benchmarks' figures already in the file."""
    out.mkdir(parents=True, exist_ok=True)
    check_model(out, model)
    summary = read_summary(out)
    summary["model"] = model
    summary.setdefault("benchmarks", {})[benchmark] = figures
    temporary = out / (SUMMARY_FILE + ".tmp")
    temporary.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    temporary.replace(out / SUMMARY_FILE)
