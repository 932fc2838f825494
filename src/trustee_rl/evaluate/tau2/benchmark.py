"""tau2-bench as a harness `Benchmark`: its items are (domain, task, trial), its categories domains.

An episode whose user simulator produced an unusable message is left unscored and played again
by the next run. tau2's own results file for each domain is written to `<out>/tau2/<domain>.json`
(`tau2 view` reads it).
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
import threading
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tau2.config import DEFAULT_MAX_ERRORS, DEFAULT_MAX_STEPS, DEFAULT_SEED
from tau2.data_model.simulation import (
    AgentInfo,
    Info,
    Results,
    RewardInfo,
    SimulationRun,
    TerminationReason,
    UserInfo,
)
from tau2.data_model.tasks import Task as Tau2Task
from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation
from tau2.orchestrator.orchestrator import Orchestrator
from tau2.registry import registry
from tau2.utils.utils import get_now

from trustee_rl.evaluate.harness import (
    CategoryResults,
    Item,
    Progress,
    Scored,
    Unscored,
    run_benchmark,
)
from trustee_rl.evaluate.results import ItemKey
from trustee_rl.evaluate.tau2.agent import AgentFailed, PolicyAgent, PolicyBridge, episode_key
from trustee_rl.evaluate.tau2.user import EMBEDDED, User, UserEndpoint, UserFailed, user_endpoint
from trustee_rl.policy.base import Conversation, Policy
from trustee_rl.schema import Message

BENCHMARK = "tau2"
DOMAINS = ("airline", "retail", "telecom")
DEFAULT_SPLIT = "base"
DEFAULT_CONCURRENCY = 8
# A reward counts as a pass within this distance of 1 (tau2's `is_successful`).
PASS_TOLERANCE = 1e-6


class Tau2Benchmark:
    """Every (domain, task, trial) of some tau2 domains.

    `split` is one of the domain's tau2 task splits ("base" = all tasks, "test", "train", ...);
    `limit` keeps the first N tasks of each domain. `user_simulator` is `embedded` or the base URL
    of an OpenAI-compatible server; `user_model` names its model (default: the first it lists).
    An episode reaching `max_steps` messages scores 0. Raises ValueError on bad input.
    """

    name = BENCHMARK

    def __init__(
        self,
        out: Path,
        *,
        domains: Sequence[str],
        split: str = DEFAULT_SPLIT,
        trials: int = 1,
        user_simulator: str = EMBEDDED,
        user_model: str | None = None,
        limit: int | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        max_steps: int = DEFAULT_MAX_STEPS,
    ) -> None:
        check_arguments(domains, trials, limit, concurrency, max_steps, user_simulator)
        self.out = out
        self.tasks = {domain: load_tasks(domain, split, limit) for domain in domains}
        self.split = split
        self.trials = trials
        self.seeds = trial_seeds(trials)
        self.user_simulator = user_simulator
        self.user_model = user_model
        self.concurrency = concurrency
        self.max_steps = max_steps
        self.user: UserEndpoint | None = None  # known once the session has reached it
        self._abort = threading.Event()
        self._executor: ThreadPoolExecutor | None = None

    @property
    def settings(self) -> dict[str, Any]:
        if self.user is None:
            raise RuntimeError("tau2's user simulator is known only within a session")
        return {"user_simulator": self.user.label, "max_steps": self.max_steps}

    def items(self) -> list[Item[Tau2Task]]:
        return [
            Item(ItemKey(domain, task.id, trial), task)
            for domain, tasks in self.tasks.items()
            for trial in range(self.trials)
            for task in tasks
        ]

    @asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        warnings.filterwarnings(  # LiteLLM's response objects, dumped by tau2 on every user turn
            "ignore", message="Pydantic serializer warnings", category=UserWarning
        )
        self._abort.clear()
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="tau2")
        try:
            async with user_endpoint(self.user_simulator, self.user_model) as user:
                self.user = user
                yield
        finally:
            self._abort.set()  # lets episode threads still waiting on the policy give up
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def play(self, item: Item[Tau2Task], policy: Policy) -> SimulationRun | Unscored:
        assert self._executor is not None and self.user is not None
        loop = asyncio.get_running_loop()
        domain, trial = item.key.category, item.key.trial
        bridge = PolicyBridge(policy, loop, self._abort)
        episode = functools.partial(
            play_episode,
            domain,
            item.data,
            trial,
            self.seeds[trial],
            bridge.ask,
            self.user,
            self.max_steps,
        )
        try:
            return await loop.run_in_executor(self._executor, episode)
        except BaseException:
            self._abort.set()  # the run stops: episodes waiting on the policy stop too
            raise

    async def score(
        self, item: Item[Tau2Task], outcome: SimulationRun | Unscored
    ) -> Scored | Unscored:
        if isinstance(outcome, Unscored):
            return outcome
        if outcome.reward_info is None:
            evaluate = functools.partial(
                evaluate_simulation,
                simulation=outcome,
                task=item.data,
                evaluation_type=EvaluationType.ALL,
                solo_mode=False,
                domain=item.key.category,
            )
            outcome.reward_info = await asyncio.get_running_loop().run_in_executor(
                self._executor, evaluate
            )
        reward = float(outcome.reward_info.reward)
        return Scored(
            reward,
            {
                "reward": reward,
                "termination": outcome.termination_reason.value,
                "wall_s": outcome.duration,
                "simulation": outcome.model_dump(mode="json"),
            },
        )

    def category_figures(self, results: CategoryResults) -> dict[str, Any]:
        domain = results.category
        rewards: dict[str, list[float]] = {task.id: [] for task in self.tasks[domain]}
        for result in results.results:
            rewards[result.key.entry].append(result.score)
        outcomes = [  # (scored trials, passes) per task
            (len(task_rewards), sum(abs(r - 1.0) <= PASS_TOLERANCE for r in task_rewards))
            for task_rewards in rewards.values()
        ]
        scores: dict[str, float] = {}
        for k in range(1, self.trials + 1):
            values = [pass_hat_k(n, c, k) for n, c in outcomes if n >= k]
            if values:
                scores[f"{domain} pass^{k}"] = sum(values) / len(values)
        simulations = [
            SimulationRun.model_validate(result.record["simulation"]) for result in results.results
        ]
        self._write_tau2_results(domain, simulations, results.model)
        return {
            "scores": scores,
            "counts": {
                f"{domain} tasks": len(self.tasks[domain]),
                f"{domain} episodes": sum(n for n, _ in outcomes),
                f"{domain} passed": sum(c for _, c in outcomes),
                f"{domain} unscored": results.unscored,
            },
            "wall_s": results.wall_s,
        }

    def figures(self, categories: dict[str, dict[str, Any]]) -> dict[str, Any]:
        scores: dict[str, float] = {}
        counts: dict[str, int] = {}
        for domain_figures in categories.values():
            scores |= domain_figures["scores"]
            counts |= domain_figures["counts"]
        return {
            "scores": scores,
            "counts": counts,
            "wall_s": {domain: row["wall_s"] for domain, row in categories.items()},
            "split": self.split,
            "trials": self.trials,
            "user_simulator": self.settings["user_simulator"],
            "max_steps": self.max_steps,
            "categories": categories,
        }

    def _write_tau2_results(
        self, domain: str, simulations: list[SimulationRun], model: str
    ) -> None:
        """tau2's own results file for the domain (what `tau2 view` and its metrics read)."""
        assert self.user is not None
        info = Info(
            git_commit="unknown",
            num_trials=self.trials,
            max_steps=self.max_steps,
            max_errors=DEFAULT_MAX_ERRORS,
            user_info=UserInfo(
                implementation="user_simulator",
                llm=self.user.llm,
                llm_args={k: v for k, v in self.user.llm_args.items() if k != "api_key"},
            ),
            agent_info=AgentInfo(implementation="trustee_rl", llm=model),
            environment_info=registry.get_env_constructor(domain)().get_info(),
            seed=DEFAULT_SEED,
        )
        results = Results(info=info, tasks=self.tasks[domain], simulations=simulations)
        path = self.out / BENCHMARK / f"{domain}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(results.model_dump_json(indent=1), encoding="utf-8")
        temporary.replace(path)


async def evaluate_tau2(
    policy: Policy,
    *,
    out: Path,
    domains: Sequence[str],
    split: str = DEFAULT_SPLIT,
    trials: int = 1,
    user_simulator: str = EMBEDDED,
    user_model: str | None = None,
    limit: int | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    max_steps: int = DEFAULT_MAX_STEPS,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run every (domain, task, trial) not yet cached in `out` (settings: see `Tau2Benchmark`),
    score it with tau2's evaluator and record the figures in `out/summary.json` under "tau2".
    Returns those figures. Raises ValueError on bad input, LMError/LMUnavailable when the policy
    or user simulator fails."""
    benchmark = Tau2Benchmark(
        out,
        domains=domains,
        split=split,
        trials=trials,
        user_simulator=user_simulator,
        user_model=user_model,
        limit=limit,
        concurrency=concurrency,
        max_steps=max_steps,
    )
    return await run_benchmark(benchmark, policy, out, progress=progress)


def play_episode(
    domain: str,
    task: Tau2Task,
    trial: int,
    seed: int,
    ask: Callable[[Conversation], Message],
    user: UserEndpoint,
    max_steps: int,
) -> SimulationRun | Unscored:
    """One tau2 episode, not yet scored unless the agent failed it (runs on a worker thread)."""
    environment = registry.get_env_constructor(domain)()
    agent = PolicyAgent(
        environment.get_tools(), environment.get_policy(), ask, episode_key(domain, trial, task.id)
    )
    try:
        user_tools = environment.get_user_tools()
    except ValueError:  # the domain gives the user no tools
        user_tools = None
    orchestrator = Orchestrator(
        domain=domain,
        agent=agent,
        user=User(
            tools=user_tools,
            instructions=str(task.user_scenario),
            llm=user.llm,
            llm_args=user.llm_args,
        ),
        environment=environment,
        task=task,
        max_steps=max_steps,
        max_errors=DEFAULT_MAX_ERRORS,
        seed=seed,
    )
    start_time, start = get_now(), time.perf_counter()
    try:
        simulation: SimulationRun = orchestrator.run()
    except UserFailed as failure:
        return Unscored(str(failure))
    except AgentFailed as failure:
        simulation = SimulationRun(
            id=str(uuid.uuid4()),
            task_id=task.id,
            start_time=start_time,
            end_time=get_now(),
            duration=time.perf_counter() - start,
            termination_reason=TerminationReason.AGENT_ERROR,
            messages=orchestrator.get_trajectory(),
            seed=seed,
            reward_info=RewardInfo(reward=0.0, info={"note": str(failure)}),
        )
    simulation.trial = trial
    return simulation


def load_tasks(domain: str, split: str, limit: int | None = None) -> list[Tau2Task]:
    """The tasks of one of tau2's splits of `domain`, the first `limit` of them if given."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown tau2 domain {domain!r}: use one of {', '.join(DOMAINS)}")
    splits = registry.get_task_splits_loader(domain)()
    if split not in splits:
        raise ValueError(
            f"unknown split {split!r} for tau2 {domain}: use one of {', '.join(sorted(splits))}"
        )
    tasks: list[Tau2Task] = registry.get_tasks_loader(domain)(split)
    return tasks if limit is None else tasks[:limit]


def trial_seeds(trials: int) -> list[int]:
    """One seed per trial, drawn as tau2's `run_tasks` draws them (passed to the user simulator)."""
    rng = random.Random(DEFAULT_SEED)
    return [rng.randint(0, 1_000_000) for _ in range(trials)]


def pass_hat_k(trials: int, successes: int, k: int) -> float:
    """The chance that k trials drawn without replacement from `trials` all pass (tau-bench)."""
    if trials < k:
        raise ValueError(f"pass^{k} needs at least {k} trials, not {trials}")
    return math.comb(successes, k) / math.comb(trials, k)


def check_arguments(
    domains: Sequence[str],
    trials: int,
    limit: int | None,
    concurrency: int,
    max_steps: int,
    user_simulator: str,
) -> None:
    if not domains:
        raise ValueError("no tau2 domain given: use one or more of " + ", ".join(DOMAINS))
    unknown = [domain for domain in domains if domain not in DOMAINS]
    if unknown:
        raise ValueError(
            f"unknown tau2 domain {unknown[0]!r}: use one or more of {', '.join(DOMAINS)}"
        )
    if len(set(domains)) != len(domains):
        raise ValueError(f"tau2 domains repeat: {', '.join(domains)}")
    if trials < 1:
        raise ValueError(f"trials must be at least 1, not {trials}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    if max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, not {max_steps}")
    if user_simulator != EMBEDDED and not user_simulator.startswith(("http://", "https://")):
        raise ValueError(
            f"unknown user simulator {user_simulator!r}: use 'embedded' or the http(s):// base URL"
            " of an OpenAI-compatible server"
        )
