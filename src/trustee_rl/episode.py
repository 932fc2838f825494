"""One episode as a steppable state machine: policy <-> user simulator and tool simulator, then the judge.

Every front end drives the same object through the runner (runner.py): one episode at a time for
`trustee simulate` and the benchmarks, lockstep batches for a trainer's rollout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from trustee_rl.lm.base import LM
from trustee_rl.schema import Episode, Message, SimCall, Task, Verdict
from trustee_rl.sim.judge import Judge
from trustee_rl.sim.structured import SimulatorContext, SimulatorError
from trustee_rl.sim.tools import ToolSimulator
from trustee_rl.sim.user import UserSimulator


@dataclass(frozen=True)
class EpisodeLimits:
    """What one episode may cost the simulator, whatever the policy writes: a runaway policy
    (dozens of calls a turn, a loop of calls) cannot stall a batch. The policy's turns and tokens
    are capped by the task's difficulty and the runner's token budget."""

    # Calls in one turn that are run; the rest get an error result without a simulator call.
    calls_per_turn: int = 8
    # Simulator calls (tools and user) after which the episode ends and is judged as it stands.
    simulator_calls: int = 64


@dataclass
class StepResult:
    """What the environment appended after the policy's reply, and whether the episode is over."""

    messages: list[Message] = field(default_factory=list)
    done: bool = False


class EpisodeEnv:
    """The policy's side of one episode; the simulated user, tools and judge are its peers.

    They share one `SimulatorContext`: the episode's seed, and every simulator call recorded in
    `episode.sim_calls`.
    """

    def __init__(
        self,
        task: Task,
        *,
        simulator: LM,
        judge: Judge,
        index: int,
        seed: int,
        policy_model: str,
        limits: EpisodeLimits | None = None,
    ) -> None:
        self.task = task
        self.judge = judge
        self.limits = limits or EpisodeLimits()
        self.seed = seed
        self.episode = Episode(
            id=f"ep_{seed:08x}_{index}",
            task_id=task.id,
            index=index,
            seed=seed,
            policy_model=policy_model,
        )
        self.simulator_context = SimulatorContext(seed, self._record_sim_call)
        self.user = UserSimulator(simulator, task, self.simulator_context)
        self.tools = ToolSimulator(simulator, task, self.simulator_context)
        self.policy_turns = 0
        self.user_turns = 0
        self._started = 0.0

    def _record_sim_call(self, call: SimCall) -> None:
        # Looked up per call: a runner may hand the episode a list that starts with its task's calls.
        self.episode.sim_calls.append(call)

    @property
    def done(self) -> bool:
        return self.episode.status != "running"

    def reset(self) -> list[Message]:
        """The policy's first view: the system prompt and the user's opening message."""
        self._started = time.perf_counter()
        self.episode.messages = [
            Message(role="system", content=self.task.system_prompt),
            self.user.opening(),
        ]
        return list(self.episode.messages)

    async def step(self, reply: Message) -> StepResult:
        if self.done:
            raise RuntimeError("step() on a finished episode")
        if reply.role != "assistant":
            raise ValueError("the policy's reply must be an assistant message")
        self.policy_turns += 1
        # Ids from the turn, not from the backend, so a replay stores identical records.
        for number, call in enumerate(reply.tool_calls):
            call.id = f"call_{self.policy_turns}_{number}"
        self.episode.messages.append(reply)
        try:
            added = await (self._run_tools(reply) if reply.tool_calls else self._user_turn())
        except SimulatorError as error:
            self._end("failed", f"simulator failed: {error}")
            return StepResult(done=True)
        self.episode.messages += added
        if not self.done and self.policy_turns >= self.task.difficulty.max_policy_turns:
            self._end("done", "max_turns")
        if not self.done and len(self.episode.sim_calls) >= self.limits.simulator_calls:
            self._end("done", "simulator_call_limit")
        return StepResult(messages=added, done=self.done)

    async def _run_tools(self, reply: Message) -> list[Message]:
        # In call order, so each result sees the ones before it (consistency) deterministically.
        allowed = self.limits.calls_per_turn
        results = [await self.tools.execute(call) for call in reply.tool_calls[:allowed]]
        refused = f"error: not run, more than {allowed} calls in one turn"
        return results + [
            Message(role="tool", tool_call_id=call.id, name=call.name, content=refused)
            for call in reply.tool_calls[allowed:]
        ]

    async def _user_turn(self) -> list[Message]:
        self.user_turns += 1
        message, finished = await self.user.reply(self.episode.messages, self.user_turns)
        if finished:
            self._end("done", "user_done")
        return [message]

    def stop(self, reason: str) -> None:
        """End the episode early but normally (e.g. the policy's token budget ran out); it is judged."""
        if not self.done:
            self._end("done", reason)

    def fail(self, reason: str) -> None:
        """End the episode because its policy could not act; it will be unscored."""
        self._end("failed", reason)

    def _end(self, status: str, reason: str) -> None:
        self.episode.status = "done" if status == "done" else "failed"
        self.episode.end_reason = reason
        self.episode.wall_s = time.perf_counter() - self._started

    async def finish(self) -> Verdict:
        if not self.done:
            raise RuntimeError("finish() before the episode ended")
        if self.episode.status == "failed":
            return Verdict.unscored(
                self.episode.id,
                self.episode.end_reason or "failed",
                self.judge.model,
                self.judge.prompt_version,
            )
        return await self.judge.judge(self.task, self.episode, self.simulator_context)
