"""The per-item outcomes behind each figure of an output dir, read from its results cache.

`summary.json` holds only the figures; the cache holds every scored item. Reading the items back
lets `trustee eval compare` put an interval on each figure and test two models on the items both
scored. An item is named the same way for every model, (category, entry), so pairing is a join.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustee_rl.evaluate.bfcl import AST, LIVE, MULTI_TURN, NON_LIVE, RELEVANCE
from trustee_rl.evaluate.results import CACHE_FILE
from trustee_rl.heldout import RATES
from trustee_rl.sqlite_snapshot import read_snapshot

ItemId = tuple[str, str]  # (category, entry)

# BFCL's leaderboard groups as bfcl.bfcl_groups builds them; a group's items are its categories'.
BFCL_GROUPS = {
    "non_live ast": [c for c in AST if c in NON_LIVE],
    "live ast": [c for c in AST if c in LIVE],
    "multi_turn": MULTI_TURN,
    "hallucination": list(RELEVANCE),
}
TAU2_METRIC = re.compile(r"^(?P<domain>.+) pass\^(?P<k>\d+)$")
# tau2's `is_successful`; written out since importing the tau2 package takes seconds.
TAU2_PASS_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Row:
    """One cached result, with what the benchmark's metrics need of its record."""

    category: str
    entry: str
    trial: int
    score: float
    verdict: dict[str, Any] | None  # the sim benchmark's judgement; None elsewhere
    first_turn: dict[str, Any] | None  # the sim benchmark's first-turn grades; None elsewhere


@dataclass(frozen=True)
class Outcomes:
    """One model's outcome on each item behind one figure."""

    values: dict[ItemId, float]

    @property
    def binary(self) -> bool:
        """Every outcome a pass (1) or a fail (0)."""
        return all(value in (0.0, 1.0) for value in self.values.values())

    @property
    def mean(self) -> float:
        return math.fsum(self.values.values()) / len(self.values)


def read_outcomes(directory: Path, summary: dict[str, Any]) -> dict[tuple[str, str], Outcomes]:
    """(benchmark, metric) -> per-item outcomes, for the figures of `summary` whose items the
    cache in `directory` holds. Empty when the dir has no cache."""
    path = directory / CACHE_FILE
    if not path.is_file():
        return {}
    found: dict[tuple[str, str], Outcomes] = {}
    # An in-memory copy, not migrated: compare never changes or adds a file in the dir, and the
    # columns read here exist since the cache's first schema.
    try:
        with closing(read_snapshot(path)) as db:
            for benchmark, figures in summary.get("benchmarks", {}).items():
                extract = EXTRACTORS.get(benchmark)
                if extract is None:
                    continue
                rows = _rows(db, summary["model"], benchmark)
                for metric, values in extract(rows, figures).items():
                    if values and metric in figures.get("scores", {}):
                        found[(benchmark, metric)] = Outcomes(values)
    except sqlite3.DatabaseError as error:
        raise ValueError(f"{path} is not a readable evaluation cache: {error}") from error
    return found


def _rows(db: sqlite3.Connection, model: str, benchmark: str) -> list[Row]:
    sim = benchmark == "sim"
    verdict = "json_extract(record, '$.verdict')" if sim else "NULL"
    first_turn = "json_extract(record, '$.first_turn')" if sim else "NULL"
    cursor = db.execute(
        f"SELECT category, entry, trial, score, {verdict}, {first_turn} FROM results"
        " WHERE model = ? AND benchmark = ? ORDER BY category, entry, trial",
        (model, benchmark),
    )
    return [
        Row(
            category,
            entry,
            trial,
            float(score),
            json.loads(verdict_text) if verdict_text else None,
            json.loads(turn_text) if turn_text else None,
        )
        for category, entry, trial, score, verdict_text, turn_text in cursor
    ]


def _sim(rows: list[Row], figures: dict[str, Any]) -> dict[str, dict[ItemId, float]]:
    """As simbench.sim_figures counts: success over every episode (an unscored one fails);
    reward and criteria over scored episodes, a criterion over the episodes that graded it."""
    label = figures.get("tasks")  # a summary speaks for one task set
    success: dict[ItemId, float] = {}
    reward: dict[ItemId, float] = {}
    criteria: dict[str, dict[ItemId, float]] = {}
    turns: dict[str, dict[ItemId, float]] = {}
    for row in rows:
        if label is not None and row.category != label:
            continue
        item = (row.category, row.entry)
        success[item] = row.score
        for name, value in (row.first_turn or {}).items():
            if name in RATES:
                turns.setdefault(f"first turn {name.replace('_', ' ')}", {})[item] = float(value)
        verdict = row.verdict or {}
        if not verdict.get("scored") or verdict.get("reward") is None:
            continue
        reward[item] = float(verdict["reward"])
        for criterion in verdict.get("criteria", []):
            passed = criteria.setdefault(f"criterion {criterion['name']}", {})
            passed[item] = max(passed.get(item, 0.0), float(bool(criterion["passed"])))
    return {"success rate": success, "mean reward": reward} | criteria | turns


def _bfcl(rows: list[Row], figures: dict[str, Any]) -> dict[str, dict[ItemId, float]]:
    by_category: dict[str, dict[ItemId, float]] = {}
    for row in rows:
        by_category.setdefault(row.category, {})[(row.category, row.entry)] = row.score
    metrics = dict(by_category)
    for group, categories in BFCL_GROUPS.items():
        if all(category in by_category for category in categories):
            metrics[f"{group} (overall)"] = {
                item: value
                for category in categories
                for item, value in by_category[category].items()
            }
    return metrics


def _tau2(rows: list[Row], figures: dict[str, Any]) -> dict[str, dict[ItemId, float]]:
    """pass^k per task (an item is a task; its trials make its outcome), as tau2 counts it."""
    trials: dict[ItemId, list[float]] = {}
    for row in rows:
        trials.setdefault((row.category, row.entry), []).append(row.score)
    metrics: dict[str, dict[ItemId, float]] = {}
    for metric in figures.get("scores", {}):
        match = TAU2_METRIC.match(metric)
        if match is None:
            continue
        domain, k = match["domain"], int(match["k"])
        metrics[metric] = {
            item: _pass_hat_k(rewards, k)
            for item, rewards in trials.items()
            if item[0] == domain and len(rewards) >= k
        }
    return metrics


def _pass_hat_k(rewards: list[float], k: int) -> float:
    passes = sum(abs(reward - 1.0) <= TAU2_PASS_TOLERANCE for reward in rewards)
    return math.comb(passes, k) / math.comb(len(rewards), k)


EXTRACTORS: dict[str, Callable[[list[Row], dict[str, Any]], dict[str, dict[ItemId, float]]]] = {
    "sim": _sim,
    "bfcl": _bfcl,
    "tau2": _tau2,
}
