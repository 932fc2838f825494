"""Numbered, append-only schema migrations for the project's SQLite files (the run store and the
evaluation results cache), so every file ever written can be brought up to date.

A released migration is never edited, only followed by new ones. Migration N is the N-th entry: its
statements run in one transaction, and `_migrations` records that it was applied.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS _migrations (number INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
)


class SchemaTooNew(RuntimeError):
    """The file was written by a newer release than this one."""


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(number), 0) FROM _migrations").fetchone()[0])


def migrate(conn: sqlite3.Connection, migrations: Sequence[Sequence[str]], where: str) -> None:
    """Apply the migrations `conn` (in autocommit mode) lacks. Raises SchemaTooNew for a file of a
    newer release, sqlite3.Error when a migration fails (it is rolled back whole)."""
    conn.execute(MIGRATIONS_TABLE)
    applied = {row[0] for row in conn.execute("SELECT number FROM _migrations")}
    newest = max(applied, default=0)
    if newest > len(migrations):
        raise SchemaTooNew(
            f"{where} has schema version {newest}, newer than this trustee-rl knows"
            f" ({len(migrations)}); upgrade trustee-rl"
        )
    for number, statements in enumerate(migrations, start=1):
        if number in applied:
            continue
        # The write lock is taken up front, so the transaction never fails midway for it.
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-checked under the lock: another process may have just applied it.
            done = conn.execute("SELECT 1 FROM _migrations WHERE number = ?", (number,))
            if done.fetchone() is None:
                for statement in statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO _migrations (number, applied_at) VALUES (?, ?)",
                    (number, time.time()),
                )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
