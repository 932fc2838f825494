"""The synthesis pipeline's stage results in one SQLite file next to its output.

One row per (stage, item), written in one transaction when the item's stage finishes: a crash
leaves whole rows only, and a rerun skips every row already there. The settings that shape the
results are stored with the first run; a rerun under other settings is refused rather than mixing
two pipelines' records.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustee_rl.schema import SimCall, Usage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    stage TEXT NOT NULL,
    item INTEGER NOT NULL,
    kept INTEGER NOT NULL,
    drop_reason TEXT,
    detail TEXT NOT NULL,
    value TEXT,
    calls TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    provenance TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (stage, item)
);
"""


class SynthStoreError(ValueError):
    """The stage file cannot be used for this run."""


@dataclass(frozen=True)
class StageRow:
    stage: str
    item: int
    kept: bool
    drop: str | None
    detail: str
    value: dict[str, Any] | None
    usage: Usage
    provenance: dict[str, Any]


class StageStore:
    def __init__(self, path: Path, settings: dict[str, Any]) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(path)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.executescript(_SCHEMA)
            self._check_settings(settings)
        except sqlite3.DatabaseError as error:
            raise SynthStoreError(f"stage file {path}: {error}") from error

    def _check_settings(self, settings: dict[str, Any]) -> None:
        text = json.dumps(settings, sort_keys=True)
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'settings'").fetchone()
        if row is None:
            with self._conn:
                self._conn.execute("INSERT INTO meta (key, value) VALUES ('settings', ?)", (text,))
            return
        stored = json.loads(row[0])
        changed = sorted(
            key for key in settings.keys() | stored.keys() if settings.get(key) != stored.get(key)
        )
        if changed:
            shown = ", ".join(f"{key}={stored.get(key)!r}" for key in changed)
            raise SynthStoreError(
                f"stage file {self.path} was written with {shown}: rerun with those settings "
                "or write to another --out"
            )

    def save(
        self,
        stage: str,
        item: int,
        *,
        value: dict[str, Any] | None,
        drop: str | None,
        detail: str,
        calls: list[SimCall],
        usage: Usage,
        provenance: dict[str, Any],
    ) -> None:
        with self._conn:
            self._conn.execute(
                "INSERT INTO results (stage, item, kept, drop_reason, detail, value, calls,"
                " prompt_tokens, completion_tokens, provenance, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    stage,
                    item,
                    int(value is not None),
                    drop,
                    detail,
                    None if value is None else json.dumps(value),
                    json.dumps([call.model_dump(mode="json") for call in calls]),
                    usage.prompt_tokens,
                    usage.completion_tokens,
                    json.dumps(provenance, sort_keys=True),
                    time.time(),
                ),
            )

    def results(self, stage: str) -> dict[int, StageRow]:
        rows = self._conn.execute(
            "SELECT item, kept, drop_reason, detail, value, prompt_tokens, completion_tokens,"
            " provenance FROM results WHERE stage = ? ORDER BY item",
            (stage,),
        )
        return {
            item: StageRow(
                stage=stage,
                item=item,
                kept=bool(kept),
                drop=drop,
                detail=detail,
                value=None if value is None else json.loads(value),
                usage=Usage(prompt_tokens=prompt, completion_tokens=completion),
                provenance=json.loads(provenance),
            )
            for item, kept, drop, detail, value, prompt, completion, provenance in rows
        }

    def close(self) -> None:
        self._conn.close()
