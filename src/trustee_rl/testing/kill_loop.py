"""Crash safety, checked by force: kill a command at random points, resume it, audit its store.

`kill_loop` runs a command once uninterrupted (the reference), then again in fresh run dirs,
sending it SIGKILL after a seeded random delay within the reference's wall time and starting it
again with the same arguments, until it has been killed the requested number of times. Each run
that finishes is audited: SQLite's integrity check, the consistency queries of AUDITS (each counts
offending rows, so any non-zero count is a defect), and the totals of TOTALS, which must equal the
reference's. Used by benchmarks/kill_loop.py and tests/test_crash_loop.py.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from trustee_rl.sqlite_snapshot import read_snapshot
from trustee_rl.store import STORE_FILE

# An episode without a task is legitimate only when its task could not be written at all.
_UNTASKED = "json_extract(json, '$.end_reason') LIKE 'task generation failed%'"

AUDITS: dict[str, str] = {
    "episodes without a verdict": (
        "SELECT COUNT(*) FROM episodes WHERE id NOT IN (SELECT episode_id FROM verdicts)"
    ),
    "verdicts without an episode": (
        "SELECT COUNT(*) FROM verdicts WHERE episode_id NOT IN (SELECT id FROM episodes)"
    ),
    "episodes of a missing task": (
        "SELECT COUNT(*) FROM episodes"
        f" WHERE task_id NOT IN (SELECT id FROM tasks) AND NOT {_UNTASKED}"
    ),
    "tasks no episode plays": (
        "SELECT COUNT(*) FROM tasks WHERE id NOT IN (SELECT task_id FROM episodes)"
    ),
    "unfinished episodes": "SELECT COUNT(*) FROM episodes WHERE status NOT IN ('done', 'failed')",
    "missing episode indices": "SELECT COALESCE(MAX(idx) + 1 - COUNT(*), 0) FROM episodes",
    "tasks stored twice under different ids": "SELECT COUNT(*) - COUNT(DISTINCT seed) FROM tasks",
    "reward columns that disagree with the verdict": (
        "SELECT COUNT(*) FROM episodes AS e JOIN verdicts AS v ON v.episode_id = e.id"
        " WHERE e.scored IS NOT json_extract(v.json, '$.scored')"
        " OR e.reward IS NOT json_extract(v.json, '$.reward')"
    ),
    "missing curriculum steps": "SELECT COALESCE(MAX(step) + 1 - COUNT(*), 0) FROM curriculum",
    "steps with metrics but no curriculum state": (
        "SELECT COUNT(*) FROM (SELECT step FROM metrics EXCEPT SELECT step FROM curriculum)"
    ),
    "steps with a curriculum state but no metrics": (
        "SELECT COUNT(*) FROM (SELECT step FROM curriculum EXCEPT SELECT step FROM metrics)"
    ),
}

TOTALS: dict[str, str] = {
    "tasks": "SELECT COUNT(*) FROM tasks",
    "episodes": "SELECT COUNT(*) FROM episodes",
    "verdicts": "SELECT COUNT(*) FROM verdicts",
    "scored": "SELECT COUNT(*) FROM episodes WHERE scored = 1",
    "reward_sum": "SELECT ROUND(COALESCE(SUM(reward), 0), 6) FROM episodes",
    "steps": "SELECT COUNT(DISTINCT step) FROM metrics",
    "metric_rows": "SELECT COUNT(*) FROM metrics",
    "curriculum_states": "SELECT COUNT(*) FROM curriculum",
    "heldout_tasks": "SELECT COUNT(*) FROM heldout_tasks",
    "stages": "SELECT COUNT(*) FROM stages",
}


@dataclass(frozen=True)
class Audit:
    integrity: str
    problems: dict[str, int]  # only the non-zero counts of AUDITS
    totals: dict[str, float]

    @property
    def healthy(self) -> bool:
        return self.integrity == "ok" and not self.problems


def audit(run_dir: Path) -> Audit:
    """Check the store of `run_dir` without changing anything on disk."""
    with closing(read_snapshot(run_dir / STORE_FILE)) as db:
        integrity = " ".join(str(row[0]) for row in db.execute("PRAGMA integrity_check"))
        counts = {name: int(db.execute(query).fetchone()[0]) for name, query in AUDITS.items()}
        totals = {name: db.execute(query).fetchone()[0] for name, query in TOTALS.items()}
    return Audit(integrity, {name: n for name, n in counts.items() if n}, totals)


# The command line for a run dir: the same every time, except what resuming requires.
CommandLine = Callable[[Path], list[str]]


@dataclass
class KillReport:
    name: str
    reference: Audit
    reference_s: float
    kills: int = 0
    kills_while_storing: int = 0  # kills of a launch that had stored something
    launches: int = 0
    audits: list[Audit] = field(default_factory=list)  # one per run finished after kills
    failures: list[str] = field(default_factory=list)  # launches that exited with an error

    @property
    def ok(self) -> bool:
        return (
            self.reference.healthy
            and not self.failures
            and bool(self.audits)
            and all(a.healthy and a.totals == self.reference.totals for a in self.audits)
        )

    def lines(self) -> list[str]:
        """The result in words, one finding a line."""
        verdict = "ok" if self.ok else "FAILED"
        out = [
            f"{self.name}: {verdict}: {self.kills} kills ({self.kills_while_storing} after the"
            f" launch had stored something), {self.launches} launches,"
            f" {len(self.audits)} runs finished after kills (reference {self.reference_s:.1f} s)",
            f"  reference totals: {self.reference.totals}",
        ]
        out += [f"  failure: {failure}" for failure in self.failures]
        for number, found in enumerate(self.audits, start=1):
            differences = {
                name: (value, self.reference.totals[name])
                for name, value in found.totals.items()
                if value != self.reference.totals[name]
            }
            status = f"integrity {found.integrity}"
            status += (
                f", problems {found.problems}"
                if found.problems
                else ", no orphan or duplicate rows"
            )
            status += (
                f", totals differ (got, reference) {differences}"
                if differences
                else ", totals equal"
            )
            out.append(f"  run {number}: {status}")
        return out


def kill_loop(
    name: str,
    command: CommandLine,
    work_dir: Path,
    *,
    kills: int,
    seed: int,
    timeout_s: float = 600.0,
) -> KillReport:
    """Kill `command` `kills` times at random points in all, resuming after each kill."""
    started = time.monotonic()
    reference_dir = work_dir / "reference"
    failure = _launch(command(reference_dir), work_dir / "reference.log", None, timeout_s)
    if failure is not None:
        raise RuntimeError(f"{name}: the uninterrupted run failed: {failure}")
    report = KillReport(name, audit(reference_dir), time.monotonic() - started)
    rng = random.Random(seed)
    # Kill points fall within a whole run's wall time: the shortest seen, as a run slowed by a
    # busy machine would put many of them past the end of the next.
    window_s = report.reference_s
    cycle = 0
    while report.kills < kills and not report.failures:
        cycle += 1
        run_dir = work_dir / f"killed-{cycle}"
        while True:
            report.launches += 1
            # Once enough kills are done, the last run is left to finish.
            delay = rng.uniform(0.0, window_s) if report.kills < kills else None
            stored_before = _stored(run_dir)
            launched = time.monotonic()
            outcome = _launch(command(run_dir), work_dir / f"killed-{cycle}.log", delay, timeout_s)
            if stored_before is None and outcome is None:
                window_s = min(window_s, time.monotonic() - launched)
            if outcome == "killed":
                report.kills += 1
                report.kills_while_storing += _stored(run_dir) != stored_before
                continue
            if outcome is not None:
                report.failures.append(f"run {cycle}, launch {report.launches}: {outcome}")
            else:
                report.audits.append(audit(run_dir))
            break
    return report


def _stored(run_dir: Path) -> dict[str, float] | None:
    return audit(run_dir).totals if (run_dir / STORE_FILE).exists() else None


def _launch(argv: list[str], log: Path, kill_after: float | None, timeout_s: float) -> str | None:
    """Run `argv` until it exits or `kill_after` seconds pass. Returns None for a clean exit,
    "killed" when it was killed, or the error (exit code and last line of its stderr)."""
    with log.open("w") as stderr:
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            code = process.wait(timeout=timeout_s if kill_after is None else kill_after)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            if kill_after is None:
                return f"still running after {timeout_s:.0f} s"
            return "killed"
    if code == 0:
        return None
    lines = log.read_text(errors="replace").strip().splitlines()
    return f"exit {code}: {lines[-1] if lines else '(no output)'}"
