"""Everything the report shows, read from the run store in one go.

The store is opened read-only, as an in-memory snapshot: a report never changes the run dir (no
file written, none created, not even SQLite's -wal and -shm), shows one consistent state of a run
still training, and reads a store written by an older trustee-rl by migrating the copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustee_rl.schema import Episode, StageRecord, Task, Verdict
from trustee_rl.store import RunStore


@dataclass(frozen=True)
class RunData:
    run_dir: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    tasks: dict[str, Task]
    episodes: list[Episode]
    verdicts: dict[str, Verdict]
    curriculum: list[tuple[int, dict[str, Any]]]
    metrics: list[tuple[int, str, float]]
    stages: dict[str, StageRecord]
    heldout_tasks: list[Task]

    def scored(self) -> list[tuple[Episode, Verdict]]:
        """Scored episodes with their verdicts, in index order."""
        pairs = [(episode, self.verdicts.get(episode.id)) for episode in self.episodes]
        return [(e, v) for e, v in pairs if v is not None and v.scored and v.reward is not None]


def load_run(run_dir: Path) -> RunData:
    with RunStore.open(run_dir, readonly=True) as store:
        return RunData(
            run_dir=run_dir,
            config=store.config,
            summary=store.summary(),
            tasks={task.id: task for task in store.tasks()},
            episodes=store.episodes(),
            verdicts={verdict.episode_id: verdict for verdict in store.verdicts()},
            curriculum=store.curriculum_states(),
            metrics=store.metrics(),
            stages=store.stages(),
            heldout_tasks=store.heldout_tasks(),
        )
