"""The run store's schema: its migrations, and how to tell whether a SQLite file holds a run store."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

# Append-only: a released migration is never edited, only followed by new ones, so every run file
# ever written can be brought up to date. Migration N is MIGRATIONS[N - 1].
MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE tasks (
        id TEXT PRIMARY KEY, seed INTEGER NOT NULL, domain TEXT NOT NULL, level REAL NOT NULL,
        json TEXT NOT NULL, created_at REAL NOT NULL
    );
    CREATE INDEX tasks_by_creation ON tasks (created_at, id);
    -- scored is NULL until the episode has a verdict, then 0 or 1.
    CREATE TABLE episodes (
        id TEXT PRIMARY KEY, idx INTEGER NOT NULL UNIQUE, task_id TEXT NOT NULL,
        status TEXT NOT NULL, reward REAL, scored INTEGER, json TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX episodes_by_status ON episodes (status);
    CREATE TABLE verdicts (episode_id TEXT PRIMARY KEY, json TEXT NOT NULL);
    CREATE TABLE curriculum (step INTEGER PRIMARY KEY, json TEXT NOT NULL);
    -- value is nullable because SQLite stores NaN as NULL.
    CREATE TABLE metrics (
        step INTEGER NOT NULL, name TEXT NOT NULL, value REAL, PRIMARY KEY (step, name)
    );
    """,
    """
    -- Tasks frozen before training to score every stage on; position keeps their order.
    CREATE TABLE heldout_tasks (position INTEGER PRIMARY KEY, json TEXT NOT NULL);
    -- One row per finished training stage (base, warm_start, grpo): its held-out scores.
    CREATE TABLE stages (
        name TEXT PRIMARY KEY, position INTEGER NOT NULL, json TEXT NOT NULL
    );
    """,
]


def migration_statements(script: str) -> Iterator[str]:
    """Split a migration script into single statements (executescript would commit midway)."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\n;"):
                yield pending
            pending = ""


def store_problem(conn: sqlite3.Connection) -> str | None:
    """Why `conn` does not read a healthy run store, or None when it does. Raises
    sqlite3.DatabaseError for a file SQLite cannot read at all."""
    check = conn.execute("PRAGMA quick_check").fetchall()
    if check != [("ok",)]:
        return "quick_check: " + " ".join(str(check[0][0]).split())
    table = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_migrations'"
    ).fetchone()
    return None if table is not None else "no _migrations table"
