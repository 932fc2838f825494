"""Readers of the project's SQLite files change nothing on disk: no byte, no mtime, no new file
(SQLite's -wal and -shm included), whether a writer is live, was killed, or is long gone."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

from trustee_rl.evaluate.paired import read_outcomes
from trustee_rl.evaluate.results import (
    CACHE_FILE,
    read_summary,
)
from trustee_rl.sqlite_snapshot import read_snapshot


def dir_state(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        path.name: (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        for path in folder.iterdir()
    }


def wal_database(path: Path) -> sqlite3.Connection:
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("CREATE TABLE t (x INTEGER)")
    writer.execute("INSERT INTO t VALUES (1)")
    return writer


def test_a_closed_wal_database_is_copied_without_side_files(tmp_path: Path) -> None:
    wal_database(tmp_path / "db.sqlite").close()
    before = dir_state(tmp_path)
    with closing(read_snapshot(tmp_path / "db.sqlite")) as copy:
        assert copy.execute("SELECT x FROM t").fetchall() == [(1,)]
    assert dir_state(tmp_path) == before == {"db.sqlite": before["db.sqlite"]}


def test_a_copy_sees_what_a_live_writer_committed_and_stays_as_it_was(tmp_path: Path) -> None:
    with closing(wal_database(tmp_path / "db.sqlite")) as writer:
        with closing(read_snapshot(tmp_path / "db.sqlite")) as copy:
            writer.execute("INSERT INTO t VALUES (2)")
            assert copy.execute("SELECT x FROM t").fetchall() == [(1,)]
        names = sorted(path.name for path in tmp_path.iterdir())
        assert names == ["db.sqlite", "db.sqlite-shm", "db.sqlite-wal"]  # the writer's own


def test_not_a_database_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "db.sqlite").write_bytes(b"not a database, " * 64)
    try:
        read_snapshot(tmp_path / "db.sqlite")
    except sqlite3.DatabaseError as error:
        assert "not a database" in str(error)
    else:
        raise AssertionError("random bytes were read as a database")


# An evaluation killed after caching its items: they sit in the WAL, never checkpointed.
KILLED_EVALUATION = """
import os, sys
from pathlib import Path
from trustee_rl.evaluate.results import ItemKey, Result, ResultCache, update_summary
out = Path(sys.argv[1])
update_summary(out, "m", "tau2", {"scores": {"airline pass^1": 0.5}})
cache = ResultCache(out)
for i in range(4):
    cache.put("m", "tau2", Result(ItemKey("airline", f"t{i}", 0), float(i % 2), {}))
os._exit(0)
"""


def test_paired_outcomes_of_a_killed_evaluation_are_read_without_touching_its_dir(
    tmp_path: Path,
) -> None:
    subprocess.run([sys.executable, "-c", KILLED_EVALUATION, str(tmp_path)], check=True)
    before = dir_state(tmp_path)
    assert before.keys() >= {CACHE_FILE, f"{CACHE_FILE}-wal"}
    outcomes = read_outcomes(tmp_path, read_summary(tmp_path))
    assert outcomes[("tau2", "airline pass^1")].mean == 0.5
    after = dir_state(tmp_path)
    after.pop(f"{CACHE_FILE}-shm"), before.pop(f"{CACHE_FILE}-shm")  # SQLite's lock index
    assert after == before
