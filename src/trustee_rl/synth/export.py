"""`trustee tasks export`: a task file as JSON Lines, Parquet or a Hugging Face `datasets`
directory. Table rows keep the task's scalar fields as columns and its nested fields (tools with
free-form JSON schemas, rubric, difficulty, ...) as JSON text, so every row reads back as the
same `Task`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Literal

from trustee_rl.schema import Task
from trustee_rl.task_files import write_task_file

ExportFormat = Literal["jsonl", "parquet", "hf"]
FORMATS: tuple[ExportFormat, ...] = ("jsonl", "parquet", "hf")
_SCALARS = ("id", "domain", "persona", "goal", "initial_message", "system_prompt", "seed")


def task_row(task: Task) -> dict[str, Any]:
    record = task.model_dump(mode="json")
    return {
        key: value if key in _SCALARS else json.dumps(value, sort_keys=True)
        for key, value in record.items()
    }


def task_from_row(row: dict[str, Any]) -> Task:
    return Task.model_validate(
        {key: value if key in _SCALARS else json.loads(value) for key, value in row.items()}
    )


def export_tasks(tasks: list[Task], out: Path, form: ExportFormat) -> None:
    """Write `tasks` to `out` whole or not at all."""
    if form == "jsonl":
        write_task_file(out, tasks)
        return
    rows = [task_row(task) for task in tasks]
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    if partial.is_dir():
        shutil.rmtree(partial)
    if form == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), partial)
    else:
        from datasets import Dataset

        Dataset.from_list(rows).save_to_disk(str(partial))
    if out.is_dir():
        shutil.rmtree(out)
    os.replace(partial, out)


def read_exported(path: Path, form: ExportFormat) -> list[Task]:
    """The tasks of an export, read back (for checking one)."""
    if form == "jsonl":
        from trustee_rl.task_files import load_task_file

        return load_task_file(path)
    if form == "parquet":
        import pyarrow.parquet as pq

        return [task_from_row(row) for row in pq.read_table(path).to_pylist()]
    from datasets import load_from_disk

    return [task_from_row(dict(row)) for row in load_from_disk(str(path))]
