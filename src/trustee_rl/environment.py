"""The simulated world: one simulator LM behind the task generator, user and tool simulators and judge.

Front ends (simulate, train, eval) ask it for tasks and for episodes over those tasks.
"""

from __future__ import annotations

from trustee_rl.episode import EpisodeEnv, EpisodeLimits
from trustee_rl.lm import LM
from trustee_rl.schema import Difficulty, SimCall, Task
from trustee_rl.sim.catalog import Catalog
from trustee_rl.sim.judge import Judge, JudgeConfig
from trustee_rl.sim.taskgen import TaskGenConfig, TaskGenerator


class Environment:
    def __init__(
        self,
        simulator: LM,
        catalog: Catalog,
        judge: JudgeConfig | None = None,
        taskgen: TaskGenConfig | None = None,
        limits: EpisodeLimits | None = None,
    ) -> None:
        self.simulator = simulator
        self.limits = limits or EpisodeLimits()
        self.catalog = catalog
        judge = judge or JudgeConfig()
        self.judge = Judge(simulator if judge.mode == "lm" else None, judge)
        self.generator = TaskGenerator(simulator, catalog, taskgen)

    async def task(self, difficulty: Difficulty, seed: int, log: list[SimCall]) -> Task:
        """A new task; raises SimulatorError when the simulator cannot write one.

        The generator's simulator calls go to `log`, for the caller to keep with the task."""
        return await self.generator.generate(difficulty, seed, log)

    def episode(self, task: Task, *, index: int, seed: int, policy_model: str) -> EpisodeEnv:
        """An episode over `task`. Episodes with the same seed meet the same simulated user and tools."""
        return EpisodeEnv(
            task,
            simulator=self.simulator,
            judge=self.judge,
            index=index,
            seed=seed,
            policy_model=policy_model,
            limits=self.limits,
        )
