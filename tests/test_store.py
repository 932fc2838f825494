from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import trustee_rl
from trustee_rl import store as store_module
from trustee_rl.cli import app
from trustee_rl.schema import (
    CriterionResult,
    Difficulty,
    Episode,
    EpisodeStatus,
    ExpectedCall,
    HeldoutScores,
    Message,
    Provenance,
    StageRecord,
    Task,
    Tool,
    ToolCall,
    Verdict,
)
from trustee_rl.store import STORE_FILE, RunStore, StoreError

CONFIG = {"seed": 7, "policy": {"model": "policy-a"}, "steps": 10}


def make_task(task_id: str = "task_1", seed: int = 1, level: float = 10.0) -> Task:
    return Task(
        id=task_id,
        domain="travel",
        tools=[
            Tool(
                name="search_flights",
                description="Find flights.",
                parameters={
                    "type": "object",
                    "properties": {"origin": {"type": "string"}},
                    "required": ["origin"],
                },
            )
        ],
        system_prompt="You are a travel agent.",
        persona="expert",
        initial_message="Find me a flight from Oslo.",
        goal="Search flights from Oslo.",
        expected_calls=[ExpectedCall(name="search_flights", arguments={"origin": "Oslo"})],
        difficulty=Difficulty(
            level=level,
            num_tools=1,
            num_calls=1,
            num_turns=1,
            prompt_specificity="detailed",
            persona="expert",
            ambiguity="clear",
            strictness=1,
        ),
        seed=seed,
        provenance=Provenance(simulator_model="sim-model"),
    )


def make_episode(
    index: int, status: EpisodeStatus = "done", episode_id: str | None = None
) -> Episode:
    call = ToolCall(id="call_1", name="search_flights", arguments={"origin": "Oslo"})
    return Episode(
        id=episode_id or f"ep_{index}",
        task_id="task_1",
        index=index,
        seed=100 + index,
        policy_model="policy-a",
        messages=[
            Message(role="user", content="Find me a flight from Oslo."),
            Message(role="assistant", tool_calls=[call]),
        ],
        status=status,
        end_reason=None if status == "running" else "answered",
    )


def make_verdict(episode_id: str, reward: float | None = 1.0) -> Verdict:
    if reward is None:
        return Verdict.unscored(episode_id, "judge output unreadable", "judge-model", "v1")
    return Verdict(
        episode_id=episode_id,
        scored=True,
        reward=reward,
        criteria=[
            CriterionResult(name="intent", passed=True, reason="ok", source="judge", score=1.0)
        ],
        judge_model="judge-model",
        prompt_version="v1",
    )


def save_judged(store: RunStore, index: int, reward: float | None = 1.0) -> Episode:
    episode = make_episode(index)
    store.save_episode(episode, make_verdict(episode.id, reward))
    return episode


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "a"


@pytest.fixture
def store(run_dir: Path) -> RunStore:
    return RunStore.create(run_dir, CONFIG)


# -- creating and opening ------------------------------------------------------------------------


def test_create_makes_a_wal_store_with_the_config(store: RunStore, run_dir: Path) -> None:
    assert (run_dir / STORE_FILE).is_file()
    assert store.config == CONFIG
    assert store._conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    store.close()
    with RunStore.open(run_dir) as reopened:
        assert reopened.config == CONFIG


def test_create_refuses_an_existing_store(store: RunStore, run_dir: Path) -> None:
    store.close()
    with pytest.raises(StoreError, match="already exists"):
        RunStore.create(run_dir, CONFIG)


def test_open_refuses_a_missing_store(run_dir: Path) -> None:
    with pytest.raises(StoreError, match=r"no run\.sqlite"):
        RunStore.open(run_dir)
    assert not run_dir.exists()


def test_a_run_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "not_a_dir"
    run_dir.write_text("hello")
    with pytest.raises(StoreError, match="is not a directory"):
        RunStore.create(run_dir, CONFIG)
    with pytest.raises(StoreError, match="is not a directory"):
        RunStore.open(run_dir)
    with pytest.raises(StoreError, match="is not a directory"):
        RunStore.open_or_create(run_dir, CONFIG)
    assert run_dir.read_text() == "hello"


def test_unserializable_config_is_refused(run_dir: Path) -> None:
    with pytest.raises(StoreError, match="config is not JSON-serializable"):
        RunStore.create(run_dir, {"seed": object()})
    assert not (run_dir / STORE_FILE).exists()


def test_stages_round_trip_in_the_order_they_finished(store: RunStore) -> None:
    scores = HeldoutScores(
        tasks=4, any_call=0.5, valid_call=0.25, right_tool=0.25, argument_accuracy=0.1
    )
    store.save_stage(StageRecord(name="base", scores=scores, wall_s=1.0))
    store.save_stage(StageRecord(name="warm_start", training={"demos": 3.0}))
    # Scoring a stage later keeps its place in the order.
    store.save_stage(StageRecord(name="warm_start", scores=scores, training={"demos": 3.0}))
    stages = store.stages()
    assert list(stages) == ["base", "warm_start"]
    assert stages["warm_start"].scores == scores and stages["warm_start"].training == {"demos": 3.0}


def test_heldout_tasks_are_frozen_once(store: RunStore) -> None:
    tasks = [make_task("task_a"), make_task("task_b")]
    store.freeze_heldout_tasks(tasks)
    assert store.heldout_tasks() == tasks
    with pytest.raises(StoreError, match="frozen already"):
        store.freeze_heldout_tasks([make_task("task_c")])
    assert store.heldout_tasks() == tasks


def test_a_readonly_store_never_writes_even_an_old_schema(run_dir: Path) -> None:
    with RunStore.create(run_dir, {"seed": 1}) as store:
        store.save_task(make_task())
    # Make it a store of the first release: migration 1 only.
    with closing(sqlite3.connect(run_dir / STORE_FILE)) as conn:
        conn.execute("DELETE FROM _migrations WHERE number > 1")
        conn.execute("DROP TABLE heldout_tasks")
        conn.execute("DROP TABLE stages")
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = (run_dir / STORE_FILE).read_bytes()
    with RunStore.open(run_dir, readonly=True) as old:
        assert [task.id for task in old.tasks()] == ["task_1"]
        assert old.stages() == {} and old.heldout_tasks() == []
        with pytest.raises(StoreError, match="write"):
            old.save_stage(StageRecord(name="base"))
    assert (run_dir / STORE_FILE).read_bytes() == before
    with RunStore.open(run_dir, readonly=True) as current_copy:  # still old on disk
        assert current_copy.stages() == {}


def run_dir_files(run_dir: Path) -> dict[str, tuple[str, int]]:
    """Every file in the run dir, with its hash and mtime."""
    return {path.name: (sha256(path), path.stat().st_mtime_ns) for path in run_dir.iterdir()}


def test_report_and_export_leave_the_run_dir_as_it_was(
    store: RunStore, run_dir: Path, tmp_path: Path
) -> None:
    fill_for_export(store)
    store.close()
    before = run_dir_files(run_dir)
    assert list(before) == [STORE_FILE]
    cli = CliRunner()
    reported = cli.invoke(app, ["report", str(run_dir)])
    assert reported.exit_code == 0, reported.output
    exported = cli.invoke(app, ["export", str(run_dir), "--out", str(tmp_path / "out")])
    assert exported.exit_code == 0, exported.output
    assert len(list((tmp_path / "out").iterdir())) == 7
    after = run_dir_files(run_dir)
    assert after.pop("report.html") and after == before  # not even a -wal or -shm file


def test_a_reader_of_a_killed_writers_store_sees_its_commits_and_changes_nothing(
    store: RunStore, run_dir: Path
) -> None:
    store.close()
    src = Path(trustee_rl.__file__).parents[1]
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from trustee_rl.store import RunStore\n"
        "from trustee_rl.schema import StageRecord\n"
        "store = RunStore.open(Path(sys.argv[1]))\n"
        "store.save_stage(StageRecord(name='base', wall_s=2.0))\n"
        "os._exit(0)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(src)}
    subprocess.run([sys.executable, "-c", script, str(run_dir)], check=True, env=env)
    wal = run_dir / f"{STORE_FILE}-wal"
    before = {path: sha256(path) for path in (run_dir / STORE_FILE, wal)}
    with RunStore.open(run_dir, readonly=True) as reader:
        assert reader.stages()["base"].wall_s == 2.0  # committed, still only in the WAL
    assert {path: sha256(path) for path in before} == before
    assert sorted(path.name for path in run_dir.iterdir()) == sorted(
        [STORE_FILE, wal.name, f"{STORE_FILE}-shm"]
    )


def test_a_reader_sees_what_a_live_writer_committed(store: RunStore, run_dir: Path) -> None:
    save_judged(store, 0)
    with RunStore.open(run_dir, readonly=True) as reader:
        save_judged(store, 1)  # the reader holds a snapshot, taken when it opened
        assert [episode.index for episode in reader.episodes()] == [0]
    with RunStore.open(run_dir, readonly=True) as reader:
        assert [episode.index for episode in reader.episodes()] == [0, 1]


def test_a_create_killed_midway_leaves_no_store_and_is_started_afresh(run_dir: Path) -> None:
    run_dir.mkdir(parents=True)
    # What a kill after the schema but before the config leaves: under its temporary name.
    with closing(sqlite3.connect(run_dir / f"{STORE_FILE}.partial")) as conn:
        conn.execute("CREATE TABLE _migrations (number INTEGER PRIMARY KEY)")
    store, resumed = RunStore.open_or_create(run_dir, CONFIG)
    with store:
        assert not resumed and store.config == CONFIG
    assert sorted(path.name for path in run_dir.iterdir()) == [STORE_FILE]


# -- resuming ------------------------------------------------------------------------------------


def test_open_or_create_creates_then_resumes(run_dir: Path) -> None:
    first, resumed = RunStore.open_or_create(run_dir, CONFIG)
    assert not resumed
    first.close()
    second, resumed = RunStore.open_or_create(run_dir, {**CONFIG, "steps": 20})
    assert resumed
    assert second.config == CONFIG
    second.close()


def test_resume_with_a_different_seed_raises(store: RunStore, run_dir: Path) -> None:
    store.close()
    with pytest.raises(StoreError, match=r"different seed \(stored 7, given 8\)"):
        RunStore.open_or_create(run_dir, {**CONFIG, "seed": 8})


def test_resume_keys_may_reach_into_sections(store: RunStore, run_dir: Path) -> None:
    store.close()
    changed = {**CONFIG, "policy": {"model": "policy-b"}}
    with pytest.raises(StoreError, match=r'policy.model \(stored "policy-a", given "policy-b"\)'):
        RunStore.open_or_create(run_dir, changed, resume_keys=("seed", "policy.model"))
    resumed_store, resumed = RunStore.open_or_create(run_dir, changed, resume_keys=("seed",))
    assert resumed
    resumed_store.close()


def test_an_interrupted_run_resumes_without_duplicates(store: RunStore, run_dir: Path) -> None:
    save_judged(store, 0)
    save_judged(store, 1, reward=None)
    store.save_episode(make_episode(2, status="running"), None)
    store.save_episode(make_episode(3, status="done"), None)  # finished, never judged
    store.close()

    resumed_store, resumed = RunStore.open_or_create(run_dir, CONFIG)
    assert resumed
    assert resumed_store.completed_indices() == {0, 1}
    assert resumed_store.discard_incomplete() == 2
    for index in (2, 3):
        episode = make_episode(index, episode_id=f"ep_{index}_retry")
        resumed_store.save_episode(episode, make_verdict(episode.id, 0.5))

    episodes = resumed_store.episodes()
    assert [episode.index for episode in episodes] == [0, 1, 2, 3]
    assert [episode.id for episode in episodes] == ["ep_0", "ep_1", "ep_2_retry", "ep_3_retry"]
    assert resumed_store.completed_indices() == {0, 1, 2, 3}
    resumed_store.close()


def test_a_killed_writer_leaves_a_resumable_store(store: RunStore, run_dir: Path) -> None:
    store.close()
    src = Path(trustee_rl.__file__).parents[1]
    # The child saves a task and dies without closing: the rows sit in the WAL, uncheckpointed.
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from trustee_rl.store import RunStore\n"
        "store = RunStore.open(Path(sys.argv[1]))\n"
        "from trustee_rl.schema import StageRecord\n"
        "store.save_stage(StageRecord(name='base', wall_s=2.0))\n"
        "os._exit(0)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(src)}
    subprocess.run([sys.executable, "-c", script, str(run_dir)], check=True, env=env)
    assert (run_dir / f"{STORE_FILE}-wal").stat().st_size > 0

    with RunStore.open(run_dir) as reopened:
        assert reopened.stages()["base"].wall_s == 2.0


# -- records -------------------------------------------------------------------------------------


def test_tasks_round_trip_in_creation_order(store: RunStore) -> None:
    tasks = [make_task("task_b", seed=2), make_task("task_a", seed=1, level=55.0)]
    for task in tasks:
        store.save_task(task)
    store.save_task(tasks[0].model_copy(update={"goal": "Changed goal."}))

    assert [task.id for task in store.tasks()] == ["task_b", "task_a"]
    assert store.task("task_b").goal == "Changed goal."
    assert store.task("task_a") == tasks[1]
    with pytest.raises(StoreError, match="no task 'task_c'"):
        store.task("task_c")


def test_episode_and_verdict_round_trip(store: RunStore) -> None:
    episode = make_episode(0)
    verdict = make_verdict(episode.id, 0.75)
    store.save_episode(episode, verdict)

    assert store.episode(0) == episode
    assert store.episode(1) is None
    assert store.verdict(episode.id) == verdict
    assert store.verdict("ep_missing") is None
    assert store.verdicts() == [verdict]


def test_save_episode_upserts_by_id(store: RunStore) -> None:
    running = make_episode(0, status="running")
    store.save_episode(running, None)
    done = make_episode(0, status="done")
    store.save_episode(done, make_verdict(done.id, 0.25))

    assert store.episodes() == [done]
    assert store.episodes("running") == []
    assert store._conn.execute("SELECT reward, scored FROM episodes").fetchall() == [(0.25, 1)]

    store.save_episode(done, None)
    assert store.verdict(done.id) is None
    assert store._conn.execute("SELECT reward, scored FROM episodes").fetchall() == [(None, None)]


def test_episodes_filter_by_status_in_index_order(store: RunStore) -> None:
    for index in (2, 0, 1):
        save_judged(store, index)
    store.save_episode(make_episode(3, status="failed"), make_verdict("ep_3", 0.0))
    assert [episode.index for episode in store.episodes("done")] == [0, 1, 2]
    assert [episode.index for episode in store.episodes("failed")] == [3]
    assert [verdict.episode_id for verdict in store.verdicts()] == ["ep_0", "ep_1", "ep_2", "ep_3"]


def test_an_index_taken_by_another_episode_is_refused(store: RunStore) -> None:
    save_judged(store, 0)
    with pytest.raises(StoreError, match=r"UNIQUE constraint failed: episodes\.idx"):
        store.save_episode(make_episode(0, episode_id="ep_other"), None)
    assert [episode.id for episode in store.episodes()] == ["ep_0"]


def test_a_verdict_for_another_episode_is_refused(store: RunStore) -> None:
    with pytest.raises(StoreError, match="verdict for 'ep_9'"):
        store.save_episode(make_episode(0), make_verdict("ep_9"))
    assert store.episodes() == []


def test_curriculum_states_round_trip(store: RunStore) -> None:
    store.save_curriculum(0, {"level": 1.0})
    store.save_curriculum(5, {"level": 3.0})
    store.save_curriculum(5, {"level": 4.0})
    assert store.curriculum_states() == [(0, {"level": 1.0}), (5, {"level": 4.0})]


def test_metrics_upsert_and_keep_nan(store: RunStore) -> None:
    store.log_metrics(1, {"reward": 0.5, "loss": 2.0})
    store.log_metrics(1, {"reward": 0.75})
    store.log_metrics(2, {"reward": math.nan})
    metrics = store.metrics()
    assert metrics[:2] == [(1, "loss", 2.0), (1, "reward", 0.75)]
    assert metrics[2][:2] == (2, "reward")
    assert math.isnan(metrics[2][2])


def test_summary_counts_and_mean_reward(store: RunStore) -> None:
    assert store.summary() == {
        "episodes": 0,
        "scored": 0,
        "unscored": 0,
        "mean_reward": None,
        "tasks": 0,
    }
    store.save_task(make_task())
    save_judged(store, 0, reward=1.0)
    save_judged(store, 1, reward=0.5)
    save_judged(store, 2, reward=None)
    store.save_episode(make_episode(3, status="running"), None)
    assert store.summary() == {
        "episodes": 4,
        "scored": 2,
        "unscored": 1,
        "mean_reward": 0.75,
        "tasks": 1,
    }


# -- files that are not ours ---------------------------------------------------------------------


def assert_refused_untouched(run_dir: Path, reason: str) -> None:
    path = run_dir / STORE_FILE
    before = sha256(path)
    expected = f"run dir {run_dir}: run.sqlite is not a trustee-rl run store ({reason}"
    with pytest.raises(StoreError) as raised:
        RunStore.open(run_dir)
    assert str(raised.value).startswith(expected)
    assert "\n" not in str(raised.value)
    with pytest.raises(StoreError, match="is not a trustee-rl run store"):
        RunStore.open_or_create(run_dir, CONFIG)
    assert sha256(path) == before


def test_random_bytes_are_refused_untouched(run_dir: Path) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / STORE_FILE).write_bytes(os.urandom(8192))
    assert_refused_untouched(run_dir, "file is not a database")


@pytest.mark.parametrize("keep", [0.5, 0.9, 100 / 1e9])
def test_a_truncated_store_is_refused_untouched(
    store: RunStore, run_dir: Path, tmp_path: Path, keep: float
) -> None:
    for index in range(20):
        save_judged(store, index)
    store.close()
    data = (run_dir / STORE_FILE).read_bytes()
    copy_dir = tmp_path / "truncated"
    copy_dir.mkdir()
    (copy_dir / STORE_FILE).write_bytes(data[: max(100, int(len(data) * keep))])
    assert_refused_untouched(copy_dir, "database disk image is malformed")


def test_a_foreign_sqlite_file_is_refused_untouched(run_dir: Path) -> None:
    run_dir.mkdir(parents=True)
    with sqlite3.connect(run_dir / STORE_FILE) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    conn.close()
    assert_refused_untouched(run_dir, "no _migrations table")


def test_an_empty_file_is_refused_untouched(run_dir: Path) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / STORE_FILE).write_bytes(b"")
    assert_refused_untouched(run_dir, "no _migrations table")


# -- migrations ----------------------------------------------------------------------------------


def test_an_appended_migration_applies_on_reopen(
    store: RunStore, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.save_task(make_task())
    episode = save_judged(store, 0, reward=0.5)
    store.close()

    added = """
    -- a note per episode; filled in later
    ALTER TABLE episodes ADD COLUMN note TEXT;
    CREATE TABLE notes (episode_id TEXT PRIMARY KEY, text TEXT);
    """
    monkeypatch.setattr(store_module, "MIGRATIONS", [*store_module.MIGRATIONS, added])
    with RunStore.open(run_dir) as upgraded:
        numbers = upgraded._conn.execute("SELECT number FROM _migrations ORDER BY number")
        assert [row[0] for row in numbers] == list(range(1, len(store_module.MIGRATIONS) + 1))
        assert upgraded._conn.execute("SELECT note FROM episodes").fetchall() == [(None,)]
        assert upgraded._conn.execute("SELECT COUNT(*) FROM notes").fetchone() == (0,)
        assert upgraded.episode(0) == episode
        assert upgraded.task("task_1") == make_task()
        assert upgraded.config == CONFIG
    with RunStore.open(run_dir) as again:
        assert again._conn.execute("SELECT COUNT(*) FROM _migrations").fetchone() == (
            len(store_module.MIGRATIONS),
        )


def test_a_failing_migration_rolls_back(
    store: RunStore, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.close()
    broken = "CREATE TABLE half_done (x INT); SELECT * FROM no_such_table;"
    monkeypatch.setattr(store_module, "MIGRATIONS", [*store_module.MIGRATIONS, broken])
    with pytest.raises(StoreError, match="no such table: no_such_table"):
        RunStore.open(run_dir)
    monkeypatch.undo()
    with RunStore.open(run_dir) as reopened:
        tables = reopened._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        assert "half_done" not in {row[0] for row in tables}


def test_a_store_from_a_newer_version_is_refused(
    store: RunStore, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.close()
    monkeypatch.setattr(store_module, "MIGRATIONS", [])
    with pytest.raises(StoreError, match="schema version 2, newer than this trustee-rl knows"):
        RunStore.open(run_dir)


# -- export --------------------------------------------------------------------------------------


def fill_for_export(store: RunStore) -> None:
    store.save_task(make_task())
    save_judged(store, 0, reward=0.5)
    save_judged(store, 1, reward=None)
    store.save_episode(make_episode(2, status="running"), None)
    store.save_curriculum(0, {"level": 1.0})
    store.log_metrics(0, {"reward": 0.5, "loss": 1.0})
    store.freeze_heldout_tasks([make_task("task_h1"), make_task("task_h2")])
    store.save_stage(StageRecord(name="base", wall_s=1.0))


def test_export_jsonl(store: RunStore, tmp_path: Path) -> None:
    fill_for_export(store)
    paths = store.export(tmp_path / "out", "jsonl")
    assert [path.name for path in paths] == [
        "tasks.jsonl",
        "episodes.jsonl",
        "verdicts.jsonl",
        "metrics.jsonl",
        "curriculum.jsonl",
        "heldout_tasks.jsonl",
        "stages.jsonl",
    ]
    lines = {path.stem: path.read_text().splitlines() for path in paths}
    assert {name: len(rows) for name, rows in lines.items()} == {
        "tasks": 1,
        "episodes": 3,
        "verdicts": 2,
        "metrics": 2,
        "curriculum": 1,
        "heldout_tasks": 2,
        "stages": 1,
    }
    episodes = [json.loads(line) for line in lines["episodes"]]
    assert [(row["idx"], row["reward"], row["scored"]) for row in episodes] == [
        (0, 0.5, True),
        (1, None, False),
        (2, None, None),
    ]
    assert Episode.model_validate(episodes[0]["record"]) == make_episode(0)
    assert Task.model_validate(json.loads(lines["tasks"][0])["record"]) == make_task()


def test_export_parquet(store: RunStore, tmp_path: Path) -> None:
    fill_for_export(store)
    paths = store.export(tmp_path / "out", "parquet")
    tables = {path.stem: pq.read_table(path) for path in paths}
    assert {name: table.num_rows for name, table in tables.items()} == {
        "tasks": 1,
        "episodes": 3,
        "verdicts": 2,
        "metrics": 2,
        "curriculum": 1,
        "heldout_tasks": 2,
        "stages": 1,
    }
    episodes = tables["episodes"].to_pylist()
    assert [row["status"] for row in episodes] == ["done", "done", "running"]
    assert [row["scored"] for row in episodes] == [True, False, None]
    assert episodes[0]["reward"] == 0.5
    assert Episode.model_validate_json(episodes[0]["json"]) == make_episode(0)
    assert tables["tasks"].column("level").to_pylist() == [10.0]


def test_export_of_an_empty_store_writes_typed_empty_files(store: RunStore, tmp_path: Path) -> None:
    for path in store.export(tmp_path / "out", "parquet"):
        assert pq.read_table(path).num_rows == 0
    assert str(pq.read_table(tmp_path / "out" / "episodes.parquet").schema.field("idx").type) == (
        "int64"
    )


def test_export_does_not_write_to_the_store(store: RunStore, run_dir: Path, tmp_path: Path) -> None:
    fill_for_export(store)
    before = store._conn.total_changes
    store.export(tmp_path / "out", "jsonl")
    assert store._conn.total_changes == before


# -- concurrent readers --------------------------------------------------------------------------


def test_a_reader_reads_while_the_store_writes(store: RunStore, run_dir: Path) -> None:
    save_judged(store, 0)
    uri = (run_dir / STORE_FILE).resolve().as_uri() + "?mode=ro"
    reader = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=0)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT COUNT(*) FROM episodes").fetchone() == (1,)
        # With the reader mid-transaction, the writer still commits, and the reader keeps its
        # snapshot; under a rollback journal the commit would wait for the reader instead.
        save_judged(store, 1)
        assert reader.execute("SELECT COUNT(*) FROM episodes").fetchone() == (1,)
        reader.execute("COMMIT")
        assert reader.execute("SELECT COUNT(*) FROM episodes").fetchone() == (2,)
    finally:
        reader.close()


def test_rewind_forgets_later_episodes_steps_and_metrics(store: RunStore) -> None:
    for index in range(6):
        save_judged(store, index)
    for step in range(3):
        store.save_curriculum(step, {"level": float(step)})
        store.log_metrics(step, {"reward": float(step)})
    store.rewind(first_episode=4, first_step=2)
    assert [e.index for e in store.episodes()] == [0, 1, 2, 3]
    assert len(store.verdicts()) == 4
    assert [step for step, _ in store.curriculum_states()] == [0, 1]
    assert {step for step, _, _ in store.metrics()} == {0, 1}


def test_a_transaction_lands_whole_or_not_at_all(store: RunStore) -> None:
    with store.transaction():
        save_judged(store, 0)
        store.save_curriculum(0, {"level": 1.0})
    with pytest.raises(RuntimeError), store.transaction():
        save_judged(store, 1)
        store.save_curriculum(1, {"level": 2.0})
        raise RuntimeError("killed midway")
    assert [e.index for e in store.episodes()] == [0]
    assert len(store.verdicts()) == 1
    assert [step for step, _ in store.curriculum_states()] == [0]
    save_judged(store, 1)  # writes after a rolled-back transaction are their own again
    assert [e.index for e in store.episodes()] == [0, 1]
