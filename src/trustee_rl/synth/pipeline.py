"""`trustee tasks synthesize`: the staged pipeline, its resumption and its funnel.

Items 0..n-1 go through the stages in order, a stage over all items before the next (bounded
concurrency within one). Item i's persona and seeds derive from (seed, i) alone, so a rerun or a
resume writes the same records whatever the concurrency. Each finished (stage, item) is one row
of the stage file; a rerun skips rows already there. The near-duplicate filter runs between
underspecify and solve and is recomputed each run (it is cheap and its threshold may change).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from trustee_rl.lm.base import LM
from trustee_rl.lm.openai_http import HTTPClientConfig
from trustee_rl.policy.lm import LMPolicy
from trustee_rl.schema import Task, Usage
from trustee_rl.seeding import derive_rng, derive_seed
from trustee_rl.synth.ecosystem import plan_ecosystem
from trustee_rl.synth.records import (
    Attempts,
    Plan,
    Request,
    StageOutcome,
    SynthPersona,
    Toolset,
)
from trustee_rl.synth.request import near_duplicates, tempting_variant, underspecify
from trustee_rl.synth.solve import build_task, prompt_versions, solve, write_rubric
from trustee_rl.synth.stagestore import StageRow, StageStore
from trustee_rl.synth.toolcheck import check_tools

STAGES = ("ecosystem", "toolcheck", "underspecify", "dedup", "solve", "rubric")


class SynthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(default=20, ge=1, description="candidate tasks; the funnel says how many stay")
    seed: int = 0
    simulator: str = "embedded"
    simulator_model: str | None = None
    personas: str | None = Field(default=None, description="JSONL of personas (default: shipped)")
    concurrency: int = Field(default=4, ge=1, description="items in flight at once per stage")
    attempts: int = Field(default=2, ge=1, le=8, description="solving attempts per task")
    dedup_threshold: float = Field(default=0.6, gt=0, le=1)
    dedup_ngram: int = Field(default=2, ge=1, le=5, description="word n-grams for dedup")
    hack_path: bool = Field(
        default=False,
        description="also write each kept task's policy-tempting variant (its request presses "
        "for the restricted use)",
    )
    http: HTTPClientConfig = Field(default_factory=HTTPClientConfig)


def stage_file(out: Path) -> Path:
    return out.with_suffix(".stages.sqlite")


def funnel_file(out: Path) -> Path:
    return out.with_suffix(".funnel.json")


class StageProgress(Protocol):
    def start(self, stage: str, total: int, completed: int) -> None: ...

    def advance(self, stage: str) -> None: ...


@dataclass
class StageFunnel:
    stage: str
    entered: int
    kept: int
    dropped: dict[str, int]


@dataclass
class Funnel:
    stages: list[StageFunnel]
    drops: list[dict[str, Any]]
    usage: Usage
    kept: int
    wall_s: float = 0.0

    @property
    def tokens_per_kept_task(self) -> float | None:
        total = self.usage.prompt_tokens + self.usage.completion_tokens
        return total / self.kept if self.kept else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "stages": [vars(stage) for stage in self.stages],
            "kept_tasks": self.kept,
            "simulator_tokens": self.usage.model_dump(),
            "simulator_tokens_per_kept_task": self.tokens_per_kept_task,
            "wall_s": round(self.wall_s, 2),
            "drops": self.drops,
        }


@dataclass
class SynthResult:
    tasks: list[Task]
    funnel: Funnel


@dataclass
class _Items:
    """The rows of the stages run so far, per stage, for the items of this run."""

    rows: dict[str, dict[int, StageRow]] = field(default_factory=dict)

    def kept(self, stage: str) -> list[int]:
        return [item for item, row in self.rows[stage].items() if row.kept]

    def value(self, stage: str, item: int) -> dict[str, Any]:
        value = self.rows[stage][item].value
        assert value is not None  # only kept rows are read on
        return value


class Pipeline:
    def __init__(
        self,
        config: SynthConfig,
        lm: LM,
        personas: list[SynthPersona],
        store: StageStore,
        progress: StageProgress | None = None,
    ) -> None:
        self.config = config
        self.lm = lm
        self.personas = personas
        self.store = store
        self.progress = progress
        # The simulator plays the agent too, as SynthAgent's teacher does.
        self.agent = LMPolicy(lm, name="teacher")
        order = list(range(len(personas)))
        derive_rng(config.seed, "personas").shuffle(order)
        self._order = order

    def persona(self, item: int) -> SynthPersona:
        return self.personas[self._order[item % len(self._order)]]

    def item_seed(self, item: int) -> int:
        return derive_seed(self.config.seed, "synth", item)

    async def run(self) -> SynthResult:
        items = _Items()
        everything = list(range(self.config.n))
        await self._stage(items, "ecosystem", everything, self._ecosystem)
        await self._stage(items, "toolcheck", items.kept("ecosystem"), self._toolcheck)
        await self._stage(items, "underspecify", items.kept("toolcheck"), self._underspecify)
        written = {i: items.value("underspecify", i)["request"] for i in items.kept("underspecify")}
        duplicates = near_duplicates(written, self.config.dedup_ngram, self.config.dedup_threshold)
        unique = [item for item in written if item not in duplicates]
        await self._stage(items, "solve", unique, self._solve)
        await self._stage(items, "rubric", items.kept("solve"), self._rubric)
        kept = items.kept("rubric")
        tasks = [Task.model_validate(items.value("rubric", i)) for i in kept]
        funnel = self._funnel(items, written, duplicates, len(tasks))
        if self.config.hack_path:
            tasks += [
                tempting_variant(task, self._task(items, item)[0].restriction)
                for item, task in zip(kept, tasks, strict=True)
            ]
        return SynthResult(tasks, funnel)

    async def _stage(
        self,
        items: _Items,
        stage: str,
        entered: list[int],
        work: Callable[[_Items, int], Awaitable[StageOutcome]],
    ) -> None:
        stored = self.store.results(stage)
        todo = [item for item in entered if item not in stored]
        if self.progress:
            self.progress.start(stage, len(entered), len(entered) - len(todo))
        limiter = asyncio.Semaphore(self.config.concurrency)

        async def one(item: int) -> None:
            async with limiter:
                outcome = await work(items, item)
            self._save(stage, item, outcome)
            if self.progress:
                self.progress.advance(stage)

        try:
            async with asyncio.TaskGroup() as group:
                for item in todo:
                    group.create_task(one(item))
        except ExceptionGroup as errors:  # an unusable backend stops the run, as itself
            raise errors.exceptions[0] from None
        stored = self.store.results(stage)
        items.rows[stage] = {item: stored[item] for item in entered}

    def _save(self, stage: str, item: int, outcome: StageOutcome) -> None:
        versions = sorted({call.prompt_version for call in outcome.calls})
        self.store.save(
            stage,
            item,
            value=None if outcome.value is None else outcome.value.model_dump(mode="json"),
            drop=outcome.drop,
            detail=outcome.detail,
            calls=outcome.calls,
            usage=outcome.usage,
            provenance={
                "model": self.lm.model,
                "prompt_versions": versions,
                "seed": self.item_seed(item),
                "run_seed": self.config.seed,
                "persona": self.persona(item).id,
            },
        )

    async def _ecosystem(self, items: _Items, item: int) -> StageOutcome:
        return await plan_ecosystem(self.lm, self.persona(item), self.item_seed(item))

    async def _toolcheck(self, items: _Items, item: int) -> StageOutcome:
        plan = Plan.model_validate(items.value("ecosystem", item))
        return await check_tools(self.lm, plan, self.item_seed(item))

    async def _underspecify(self, items: _Items, item: int) -> StageOutcome:
        plan = Plan.model_validate(items.value("ecosystem", item))
        toolset = Toolset.model_validate(items.value("toolcheck", item))
        return await underspecify(self.lm, plan, toolset, self.item_seed(item))

    def _task(self, items: _Items, item: int) -> tuple[Plan, Task]:
        plan = Plan.model_validate(items.value("ecosystem", item))
        task = build_task(
            plan,
            Toolset.model_validate(items.value("toolcheck", item)),
            Request.model_validate(items.value("underspecify", item)),
            seed=self.item_seed(item),
            model=self.lm.model,
        )
        return plan, task

    async def _solve(self, items: _Items, item: int) -> StageOutcome:
        _, task = self._task(items, item)
        return await solve(self.lm, self.agent, task, self.config.attempts, self.item_seed(item))

    async def _rubric(self, items: _Items, item: int) -> StageOutcome:
        plan, task = self._task(items, item)
        attempts = Attempts.model_validate(items.value("solve", item))
        return await write_rubric(self.lm, plan, task, attempts, self.item_seed(item))

    def _funnel(
        self, items: _Items, written: dict[int, str], duplicates: dict[int, str], kept: int
    ) -> Funnel:
        stages: list[StageFunnel] = []
        drops: list[dict[str, Any]] = []
        usage = Usage()
        for stage in STAGES:
            if stage == "dedup":
                reasons = Counter("near_duplicate" for _ in duplicates)
                stages.append(
                    StageFunnel(stage, len(written), len(written) - len(duplicates), dict(reasons))
                )
                drops += [
                    {"item": i, "stage": stage, "reason": "near_duplicate", "detail": detail}
                    for i, detail in duplicates.items()
                ]
                continue
            rows = items.rows[stage]
            dropped = [row for row in rows.values() if not row.kept]
            stages.append(
                StageFunnel(
                    stage,
                    len(rows),
                    len(rows) - len(dropped),
                    dict(Counter(row.drop or "unknown" for row in dropped)),
                )
            )
            drops += [
                {"item": row.item, "stage": stage, "reason": row.drop, "detail": row.detail}
                for row in dropped
            ]
            for row in rows.values():
                usage = usage + row.usage
        return Funnel(stages, sorted(drops, key=lambda d: d["item"]), usage, kept)


def settings_fingerprint(config: SynthConfig, personas: list[SynthPersona]) -> dict[str, Any]:
    """What the stored stage results depend on; a resume under other values is refused (a
    changed prompt changes what its stage writes, so its version is one of them)."""
    digest = hashlib.sha256(
        "\n".join(persona.model_dump_json() for persona in personas).encode()
    ).hexdigest()[:16]
    return {
        "seed": config.seed,
        "simulator": config.simulator,
        "simulator_model": config.simulator_model,
        "attempts": config.attempts,
        "personas": digest,
        "prompts": prompt_versions(),
    }
