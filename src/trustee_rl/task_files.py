"""Task sets as files: one `Task` record per JSON line, as `trustee tasks synthesize` writes them,
read back by `trustee simulate --tasks` (and `trustee tasks export`)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError

from trustee_rl.runner import DrawnTask
from trustee_rl.schema import Task


class TaskFileError(ValueError):
    """A task file that cannot be read as tasks; the message names the file and line."""


def load_task_file(path: Path) -> list[Task]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise TaskFileError(f"task file {path}: not UTF-8 text") from error
    except OSError as error:
        raise TaskFileError(f"task file {path}: {error.strerror or error}") from error
    tasks: list[Task] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            tasks.append(Task.model_validate_json(line))
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "record"
            raise TaskFileError(
                f"task file {path}, line {number}: not a task ({where}: {first['msg']})"
            ) from error
    if not tasks:
        raise TaskFileError(f"task file {path}: no tasks in it")
    ids = [task.id for task in tasks]
    if len(set(ids)) != len(ids):
        repeated = next(task_id for task_id in ids if ids.count(task_id) > 1)
        raise TaskFileError(f"task file {path}: task id {repeated!r} appears twice")
    return tasks


def write_task_file(path: Path, tasks: list[Task]) -> None:
    """Write `tasks` whole or not at all: a crash leaves the previous file (or none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text("".join(task.model_dump_json() + "\n" for task in tasks), encoding="utf-8")
    os.replace(partial, path)


class FileTaskSource:
    """Tasks from a file instead of the generator: episode i plays task i modulo the set's size,
    so a run of more episodes than tasks plays every task in turn."""

    def __init__(self, tasks: list[Task]) -> None:
        if not tasks:
            raise ValueError("a task source needs at least one task")
        self.tasks = tasks

    async def draw(self, index: int) -> DrawnTask:
        task = self.tasks[index % len(self.tasks)]
        return DrawnTask(task, [], task.seed)
