"""Reading a SQLite file without changing anything on disk: an in-memory copy of it.

A plain read-only connection is not enough for a WAL-mode file: SQLite creates its -wal and -shm
files for any reader and, unable to checkpoint, leaves them behind. So the file is copied into
memory through the backup API, from a connection chosen by what is on disk:

- a -wal file exists: a writer is live, or was killed with commits still in the WAL. Reading
  through the existing files sees those commits and creates nothing.
- no -wal file: no connection has the file open. It is read as immutable (no locks, no side
  files); should a writer checkpoint into it meanwhile, its size or mtime changes and the copy is
  taken again.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path

COPY_ATTEMPTS = 3


class SnapshotChanged(sqlite3.OperationalError):
    """The file kept changing while it was copied."""


def read_snapshot(path: Path) -> sqlite3.Connection:
    """An in-memory copy of the database at `path` (in autocommit mode). Raises sqlite3.Error
    when the file cannot be read as a database."""
    for _ in range(COPY_ATTEMPTS):
        before = _signature(path)
        live = Path(f"{path}-wal").exists()
        uri = f"{path.resolve().as_uri()}?mode=ro" + ("" if live else "&immutable=1")
        copy = sqlite3.connect(":memory:", isolation_level=None)
        try:
            with closing(sqlite3.connect(uri, uri=True)) as source:
                source.backup(copy)
        except BaseException:
            copy.close()
            raise
        if live or _signature(path) == before:
            return copy
        copy.close()
    raise SnapshotChanged(f"{path} kept changing while it was read; try again")


def _signature(path: Path) -> tuple[int, int]:
    status = os.stat(path)
    return status.st_size, status.st_mtime_ns
