"""The run store: one SQLite file per run (`<run_dir>/run.sqlite`).

It holds the run config, tasks, episodes with their verdicts, curriculum states and metrics, so a
run can be resumed exactly (episodes are keyed by their run-wide index) and reported on while it
trains. The file is in WAL mode: one process writes (from a single thread), others may read at the
same time. Its schema is in store_schema.py.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Collection, Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from trustee_rl.migrations import SchemaTooNew, migrate
from trustee_rl.schema import Episode, StageRecord, Task, Verdict
from trustee_rl.sqlite_snapshot import read_snapshot
from trustee_rl.store_export import ExportFormat, write_export
from trustee_rl.store_schema import MIGRATIONS as MIGRATIONS  # re-exported: tests extend it
from trustee_rl.store_schema import migration_statements, store_problem

STORE_FILE = "run.sqlite"

_COMPLETED = "status IN ('done', 'failed') AND id IN (SELECT episode_id FROM verdicts)"
_NOT_A_STORE_CODES = (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT)


class StoreError(RuntimeError):
    """The run store cannot be created, opened, resumed or written (one-line message)."""


class RunStore:
    """A run's SQLite store. Build one with `create`, `open` or `open_or_create`."""

    def __init__(
        self, run_dir: Path, connection: sqlite3.Connection, *, readonly: bool = False
    ) -> None:
        self.run_dir = run_dir
        self.readonly = readonly
        self._conn = connection
        self._in_transaction = False  # inside `transaction()`: writes join it

    # -- opening ---------------------------------------------------------------------------------

    @classmethod
    def create(cls, run_dir: Path, config: dict[str, Any]) -> RunStore:
        path = _store_path(run_dir)
        if path.exists():
            raise StoreError(f"run dir {run_dir}: {STORE_FILE} already exists; resume it instead")
        config_text = _dumps(config, "config")
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"run dir {run_dir}: cannot create it ({error})") from error
        # Built under another name and renamed into place: a kill midway leaves no store without
        # its schema or config, which no resume could open.
        partial = path.with_name(f"{STORE_FILE}.partial")
        for leftover in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")):
            leftover.unlink(missing_ok=True)
        with cls._connect(run_dir, partial, "rwc") as store, store._write() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES ('config', ?)", (config_text,))
        partial.replace(path)
        return cls._connect(run_dir, path, "rw")

    @classmethod
    def open(cls, run_dir: Path, *, readonly: bool = False) -> RunStore:
        """Open an existing run. A read-only store is an in-memory snapshot of the file, taken
        without writing or creating any file (see sqlite_snapshot.py); one written by an older
        trustee-rl is migrated in that copy."""
        path = _store_path(run_dir)
        if not path.is_file():
            raise StoreError(f"run dir {run_dir}: no {STORE_FILE} there")
        if readonly:
            return cls._connect_readonly(run_dir, path)
        # A read-only look first, so that a file that is not ours is never modified (a
        # read-write open could rewrite it).
        try:
            with closing(sqlite3.connect(_uri(path, "ro"), uri=True)) as look:
                _check_is_store(run_dir, look)
        except sqlite3.Error as error:
            raise _unreadable(run_dir, error) from error
        return cls._connect(run_dir, path, "rw")

    @classmethod
    def open_or_create(
        cls, run_dir: Path, config: dict[str, Any], resume_keys: Collection[str] = ("seed",)
    ) -> tuple[RunStore, bool]:
        """Resume the run in `run_dir` (True) or start it (False).

        Resuming requires `config` to agree with the stored config on every key in `resume_keys`
        (dotted keys reach into nested sections, e.g. "policy.model"). The stored config is kept.
        """
        if not _store_path(run_dir).exists():
            return cls.create(run_dir, config), False
        store = cls.open(run_dir)
        try:
            store._check_resumable(config, resume_keys)
        except StoreError:
            store.close()
            raise
        return store, True

    @classmethod
    def _connect(cls, run_dir: Path, path: Path, mode: Literal["rw", "rwc"]) -> RunStore:
        try:
            conn = sqlite3.connect(_uri(path, mode), uri=True, isolation_level=None)
        except sqlite3.Error as error:
            raise StoreError(f"run dir {run_dir}: cannot open {STORE_FILE} ({error})") from error
        store = cls(run_dir, conn)
        try:
            store._configure()
            store._migrate()
        except BaseException:
            conn.close()
            raise
        return store

    @classmethod
    def _connect_readonly(cls, run_dir: Path, path: Path) -> RunStore:
        try:
            snapshot = read_snapshot(path)
        except sqlite3.Error as error:
            raise _unreadable(run_dir, error) from error
        store = cls(run_dir, snapshot)
        try:
            _check_is_store(run_dir, snapshot)
            store._migrate()
        except BaseException:
            snapshot.close()
            raise
        store.readonly = True
        return store

    def _configure(self) -> None:
        try:
            self._conn.execute("PRAGMA busy_timeout = 10000")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as error:
            raise StoreError(
                f"run dir {self.run_dir}: cannot set up {STORE_FILE} ({error})"
            ) from error

    def _migrate(self) -> None:
        # This module's MIGRATIONS, read at call time, so a test can append a migration.
        scripts = [tuple(migration_statements(script)) for script in MIGRATIONS]
        try:
            migrate(self._conn, scripts, f"run dir {self.run_dir}: {STORE_FILE}")
        except SchemaTooNew as error:
            raise StoreError(str(error)) from error
        except sqlite3.Error as error:
            raise StoreError(
                f"run dir {self.run_dir}: migrating {STORE_FILE} failed ({error})"
            ) from error

    def _check_resumable(self, config: dict[str, Any], resume_keys: Collection[str]) -> None:
        stored, given = self.config, json.loads(_dumps(config, "config"))
        for key in resume_keys:
            old, new = _lookup(stored, key), _lookup(given, key)
            if old != new:
                raise StoreError(
                    f"run dir {self.run_dir}: cannot resume with a different {key}"
                    f" (stored {json.dumps(old)}, given {json.dumps(new)}); use a new run dir"
                )

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """The writes made inside land together or not at all (a training step's episodes,
        verdicts and curriculum state)."""
        with self._write():
            self._in_transaction = True
            try:
                yield
            finally:
                self._in_transaction = False

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; the write lock is taken up front so it never fails midway.
        Inside `transaction()` it is that one."""
        if self._in_transaction:
            yield self._conn
            return
        if self.readonly:
            raise StoreError(
                f"run dir {self.run_dir}: cannot write, the store was opened read-only"
            )
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        except sqlite3.Error as error:
            raise StoreError(
                f"run dir {self.run_dir}: write to {STORE_FILE} failed ({error})"
            ) from error

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction, so several queries see one consistent state of the run."""
        self._conn.execute("BEGIN")
        try:
            yield self._conn
        finally:
            self._conn.execute("COMMIT")

    # -- meta and config -------------------------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        config = self.get_meta("config")
        if not isinstance(config, dict):
            raise StoreError(f"run dir {self.run_dir}: {STORE_FILE} holds no run config")
        return config

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    # -- tasks -----------------------------------------------------------------------------------

    def save_task(self, task: Task) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO tasks (id, seed, domain, level, json, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET seed = excluded.seed, domain = excluded.domain,"
                " level = excluded.level, json = excluded.json",
                (
                    task.id,
                    task.seed,
                    task.domain,
                    task.difficulty.level,
                    task.model_dump_json(),
                    time.time(),
                ),
            )

    def task(self, task_id: str) -> Task:
        row = self._conn.execute("SELECT json FROM tasks WHERE id = ?", (task_id,)).fetchone()
        if row is None:
            raise StoreError(f"run dir {self.run_dir}: no task {task_id!r}")
        return Task.model_validate_json(row[0])

    def tasks(self) -> list[Task]:
        rows = self._conn.execute("SELECT json FROM tasks ORDER BY created_at, id")
        return [Task.model_validate_json(row[0]) for row in rows]

    # -- episodes and verdicts -------------------------------------------------------------------

    def save_episode(self, episode: Episode, verdict: Verdict | None) -> None:
        """Insert or update `episode` and its verdict together.

        A None verdict means "not judged (yet)": a verdict stored earlier is dropped, so the row's
        reward/scored columns and the verdicts table always agree.
        """
        if verdict is not None and verdict.episode_id != episode.id:
            raise StoreError(
                f"run dir {self.run_dir}: verdict for {verdict.episode_id!r}"
                f" saved with episode {episode.id!r}"
            )
        reward = None if verdict is None else verdict.reward
        scored = None if verdict is None else int(verdict.scored)
        with self._write() as conn:
            conn.execute(
                "INSERT INTO episodes (id, idx, task_id, status, reward, scored, json, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET idx = excluded.idx, task_id = excluded.task_id,"
                " status = excluded.status, reward = excluded.reward, scored = excluded.scored,"
                " json = excluded.json",
                (
                    episode.id,
                    episode.index,
                    episode.task_id,
                    episode.status,
                    reward,
                    scored,
                    episode.model_dump_json(),
                    time.time(),
                ),
            )
            if verdict is None:
                conn.execute("DELETE FROM verdicts WHERE episode_id = ?", (episode.id,))
            else:
                conn.execute(
                    "INSERT INTO verdicts (episode_id, json) VALUES (?, ?)"
                    " ON CONFLICT (episode_id) DO UPDATE SET json = excluded.json",
                    (episode.id, verdict.model_dump_json()),
                )

    def completed_indices(self) -> set[int]:
        """Indices of episodes that finished (done or failed) and have a verdict."""
        rows = self._conn.execute(f"SELECT idx FROM episodes WHERE {_COMPLETED}")
        return {row[0] for row in rows}

    def discard_incomplete(self) -> int:
        """Delete every episode not in `completed_indices` (interrupted or unjudged); on resume
        these are re-run under the same index, never duplicated. Returns how many were deleted."""
        with self._write() as conn:
            incomplete = f"SELECT id FROM episodes WHERE NOT ({_COMPLETED})"
            conn.execute(f"DELETE FROM verdicts WHERE episode_id IN ({incomplete})")
            return conn.execute(f"DELETE FROM episodes WHERE NOT ({_COMPLETED})").rowcount

    def rewind(self, first_episode: int, first_step: int) -> None:
        """Forget everything from episode index `first_episode` and step `first_step` on: a training
        resume replays the steps after its last checkpoint, and they must not be counted twice."""
        with self._write() as conn:
            later = "SELECT id FROM episodes WHERE idx >= ?"
            conn.execute(f"DELETE FROM verdicts WHERE episode_id IN ({later})", (first_episode,))
            conn.execute("DELETE FROM episodes WHERE idx >= ?", (first_episode,))
            conn.execute("DELETE FROM curriculum WHERE step >= ?", (first_step,))
            conn.execute("DELETE FROM metrics WHERE step >= ?", (first_step,))

    def episodes(self, status: str | None = None) -> list[Episode]:
        if status is None:
            rows = self._conn.execute("SELECT json FROM episodes ORDER BY idx")
        else:
            rows = self._conn.execute(
                "SELECT json FROM episodes WHERE status = ? ORDER BY idx", (status,)
            )
        return [Episode.model_validate_json(row[0]) for row in rows]

    def episode(self, idx: int) -> Episode | None:
        row = self._conn.execute("SELECT json FROM episodes WHERE idx = ?", (idx,)).fetchone()
        return None if row is None else Episode.model_validate_json(row[0])

    def verdict(self, episode_id: str) -> Verdict | None:
        row = self._conn.execute(
            "SELECT json FROM verdicts WHERE episode_id = ?", (episode_id,)
        ).fetchone()
        return None if row is None else Verdict.model_validate_json(row[0])

    def verdicts(self) -> list[Verdict]:
        """All verdicts, in the order of their episodes' indices."""
        rows = self._conn.execute(
            "SELECT v.json FROM verdicts AS v LEFT JOIN episodes AS e ON e.id = v.episode_id"
            " ORDER BY e.idx"
        )
        return [Verdict.model_validate_json(row[0]) for row in rows]

    # -- curriculum and metrics ------------------------------------------------------------------

    def save_curriculum(self, step: int, state: dict[str, Any]) -> None:
        text = _dumps(state, f"curriculum state at step {step}")
        with self._write() as conn:
            conn.execute(
                "INSERT INTO curriculum (step, json) VALUES (?, ?)"
                " ON CONFLICT (step) DO UPDATE SET json = excluded.json",
                (step, text),
            )

    def curriculum_states(self) -> list[tuple[int, dict[str, Any]]]:
        rows = self._conn.execute("SELECT step, json FROM curriculum ORDER BY step")
        return [(step, json.loads(text)) for step, text in rows]

    def log_metrics(self, step: int, values: Mapping[str, float]) -> None:
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO metrics (step, name, value) VALUES (?, ?, ?)"
                " ON CONFLICT (step, name) DO UPDATE SET value = excluded.value",
                [(step, name, float(value)) for name, value in values.items()],
            )

    def metrics(self) -> list[tuple[int, str, float]]:
        rows = self._conn.execute("SELECT step, name, value FROM metrics ORDER BY step, name")
        return [(step, name, math.nan if value is None else value) for step, name, value in rows]

    # -- held-out tasks and training stages ----------------------------------------------------

    def freeze_heldout_tasks(self, tasks: list[Task]) -> None:
        """Store the run's held-out tasks, once: a second call with other tasks is refused."""
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM heldout_tasks LIMIT 1").fetchone() is not None:
                raise StoreError(f"run dir {self.run_dir}: held-out tasks are frozen already")
            conn.executemany(
                "INSERT INTO heldout_tasks (position, json) VALUES (?, ?)",
                [(position, task.model_dump_json()) for position, task in enumerate(tasks)],
            )

    def heldout_tasks(self) -> list[Task]:
        rows = self._conn.execute("SELECT json FROM heldout_tasks ORDER BY position")
        return [Task.model_validate_json(row[0]) for row in rows]

    def save_stage(self, record: StageRecord) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO stages (name, position, json) VALUES"
                " (?, (SELECT COUNT(*) FROM stages), ?)"
                " ON CONFLICT (name) DO UPDATE SET json = excluded.json",
                (record.name, record.model_dump_json()),
            )

    def stages(self) -> dict[str, StageRecord]:
        """Finished stages by name, in the order they finished."""
        rows = self._conn.execute("SELECT json FROM stages ORDER BY position")
        records = [StageRecord.model_validate_json(row[0]) for row in rows]
        return {record.name: record for record in records}

    # -- reporting -------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Counts of episodes (all, scored, judged unscored) and tasks, and the mean reward over
        scored episodes (None when there are none)."""
        episodes, scored, unscored, mean_reward, tasks = self._conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(scored = 1), 0), COALESCE(SUM(scored = 0), 0),"
            " AVG(CASE WHEN scored = 1 THEN reward END), (SELECT COUNT(*) FROM tasks)"
            " FROM episodes"
        ).fetchone()
        return {
            "episodes": episodes,
            "scored": scored,
            "unscored": unscored,
            "mean_reward": mean_reward,
            "tasks": tasks,
        }

    def export(self, out_dir: Path, fmt: ExportFormat) -> list[Path]:
        """Write every table to one file each in `out_dir`, from one consistent snapshot; the
        store is only read. See store_export.py for the layout."""
        if fmt not in ("jsonl", "parquet"):
            raise StoreError(f"unknown export format {fmt!r} (use jsonl or parquet)")
        with self._snapshot() as conn:
            return write_export(conn, out_dir, fmt)


def _store_path(run_dir: Path) -> Path:
    if run_dir.exists() and not run_dir.is_dir():
        raise StoreError(f"run dir {run_dir}: is not a directory")
    return run_dir / STORE_FILE


def _uri(path: Path, mode: Literal["ro", "rw", "rwc"]) -> str:
    return f"{path.resolve().as_uri()}?mode={mode}"


def _check_is_store(run_dir: Path, conn: sqlite3.Connection) -> None:
    """Raise unless `conn` reads a healthy run store."""
    try:
        problem = store_problem(conn)
    except sqlite3.DatabaseError as error:
        raise _unreadable(run_dir, error) from error
    if problem is not None:
        raise StoreError(
            f"run dir {run_dir}: {STORE_FILE} is not a trustee-rl run store ({problem})"
        )


def _unreadable(run_dir: Path, error: sqlite3.Error) -> StoreError:
    if getattr(error, "sqlite_errorcode", 0) & 0xFF in _NOT_A_STORE_CODES:
        return StoreError(
            f"run dir {run_dir}: {STORE_FILE} is not a trustee-rl run store ({error})"
        )
    return StoreError(f"run dir {run_dir}: cannot read {STORE_FILE} ({error})")


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError) as error:
        raise StoreError(f"{what} is not JSON-serializable ({error})") from error


def _lookup(config: Mapping[str, Any], dotted_key: str) -> Any:
    value: Any = config
    for part in dotted_key.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value
