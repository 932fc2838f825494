"""Exporting a run store: one file per table, as JSONL or Parquet.

Rows carry flat columns (ids, index, status, reward, scored, ...) and the full record: as a
nested object under "record" in JSONL, as JSON text in a `json` column in Parquet.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

ExportFormat = Literal["jsonl", "parquet"]


@dataclass(frozen=True)
class _Export:
    """One exported file: a query and its columns with their Arrow types (`json` is the record)."""

    query: str
    columns: dict[str, str]


_EXPORTS: dict[str, _Export] = {
    "tasks": _Export(
        "SELECT id, seed, domain, level, created_at, json FROM tasks ORDER BY created_at, id",
        {
            "id": "string",
            "seed": "int64",
            "domain": "string",
            "level": "double",
            "created_at": "double",
            "json": "string",
        },
    ),
    "episodes": _Export(
        "SELECT id, idx, task_id, status, reward, scored, created_at, json"
        " FROM episodes ORDER BY idx",
        {
            "id": "string",
            "idx": "int64",
            "task_id": "string",
            "status": "string",
            "reward": "double",
            "scored": "bool",
            "created_at": "double",
            "json": "string",
        },
    ),
    "verdicts": _Export(
        "SELECT v.episode_id, e.idx, e.scored, e.reward, v.json"
        " FROM verdicts AS v LEFT JOIN episodes AS e ON e.id = v.episode_id ORDER BY e.idx",
        {
            "episode_id": "string",
            "idx": "int64",
            "scored": "bool",
            "reward": "double",
            "json": "string",
        },
    ),
    "metrics": _Export(
        "SELECT step, name, value FROM metrics ORDER BY step, name",
        {"step": "int64", "name": "string", "value": "double"},
    ),
    "curriculum": _Export(
        "SELECT step, json FROM curriculum ORDER BY step",
        {"step": "int64", "json": "string"},
    ),
    "heldout_tasks": _Export(
        "SELECT position, json FROM heldout_tasks ORDER BY position",
        {"position": "int64", "json": "string"},
    ),
    "stages": _Export(
        "SELECT name, position, json FROM stages ORDER BY position",
        {"name": "string", "position": "int64", "json": "string"},
    ),
}


def write_export(conn: sqlite3.Connection, out_dir: Path, fmt: ExportFormat) -> list[Path]:
    tables = {name: _export_rows(conn, spec) for name, spec in _EXPORTS.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, rows in tables.items():
        path = out_dir / f"{name}.{fmt}"
        if fmt == "jsonl":
            _write_jsonl(path, rows)
        else:
            _write_parquet(path, rows, _EXPORTS[name].columns)
        paths.append(path)
    return paths


def _export_rows(conn: sqlite3.Connection, spec: _Export) -> list[dict[str, Any]]:
    names = list(spec.columns)
    bools = [name for name, kind in spec.columns.items() if kind == "bool"]
    rows = []
    for values in conn.execute(spec.query):
        row = dict(zip(names, values, strict=True))
        for name in bools:
            row[name] = None if row[name] is None else bool(row[name])
        rows.append(row)
    return rows


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as file:
        for row in rows:
            line = {key: value for key, value in row.items() if key != "json"}
            if "json" in row:
                line["record"] = json.loads(row["json"])
            file.write(json.dumps(line) + "\n")


def _write_parquet(path: Path, rows: list[dict[str, Any]], columns: dict[str, str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(name, pa.type_for_alias(kind)) for name, kind in columns.items()])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
