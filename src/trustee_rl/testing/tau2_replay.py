"""tau2's ground truth played as a policy against a scripted user, to prove the tau2 plumbing
(tools, environment, orchestration, scoring) without a model (test support)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trustee_rl.evaluate.harness import Progress
from trustee_rl.evaluate.tau2 import DEFAULT_CONCURRENCY, DEFAULT_SPLIT, evaluate_tau2
from trustee_rl.policy.base import Conversation
from trustee_rl.schema import Message, ToolCall
from trustee_rl.testing.openai_server import LoopbackOpenAIServer, Reply

USER_MODEL = "tau2-replay-user"


class ReplayPolicy:
    """Replays each task's ground-truth agent actions as tool calls, one per turn, then tells the
    user everything the task wants communicated. It scores 1.0 wherever replaying the actions is
    the right answer. The task is looked up by the episode's `Conversation.key`."""

    name = "tau2-replay"
    trainable = False

    def __init__(self) -> None:
        self._tasks: dict[str, dict[str, Any]] = {}  # per domain, by id

    async def act(self, conversations: Sequence[Conversation]) -> list[Message]:
        return [self._next(conversation) for conversation in conversations]

    def _next(self, conversation: Conversation) -> Message:
        domain, _trial, task_id = conversation.key.split(":", 2)
        criteria = self._task(domain, task_id).evaluation_criteria
        actions = (criteria.actions or []) if criteria is not None else []
        actions = [action for action in actions if action.requestor == "assistant"]
        made = sum(len(m.tool_calls) for m in conversation.messages if m.role == "assistant")
        if made < len(actions):
            action = actions[made]
            call = ToolCall(id=f"replay_{made}", name=action.name, arguments=action.arguments)
            return Message(role="assistant", tool_calls=[call])
        said = (criteria.communicate_info or []) if criteria is not None else []
        return Message(role="assistant", content=" ".join(["Done.", *said]))

    def _task(self, domain: str, task_id: str) -> Any:
        from tau2.registry import registry

        if domain not in self._tasks:
            tasks = registry.get_tasks_loader(domain)(DEFAULT_SPLIT)
            self._tasks[domain] = {task.id: task for task in tasks}
        return self._tasks[domain][task_id]

    async def aclose(self) -> None:
        return None


class ReplayUser:
    """A loopback user simulator for the replay: it asks for help once, then ends the
    conversation with tau2's stop token at the agent's next message."""

    opening = "Hi, I need help with a request."

    def __call__(self, request: dict[str, Any]) -> Reply:
        from tau2.orchestrator.orchestrator import DEFAULT_FIRST_AGENT_MESSAGE
        from tau2.user.base import STOP

        # The user simulator sees the agent's messages as "user" turns: the greeting, then more.
        heard = [m for m in request.get("messages", []) if m.get("role") == "user"]
        greeting_only = len(heard) <= 1 and all(
            m.get("content") == DEFAULT_FIRST_AGENT_MESSAGE.content for m in heard
        )
        return Reply(content=self.opening if greeting_only else STOP)


async def replay_check(
    *,
    out: Path,
    domains: Sequence[str] = ("airline", "retail"),
    split: str = DEFAULT_SPLIT,
    limit: int | None = None,
    progress: Progress | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> dict[str, Any]:
    """`ReplayPolicy` against `ReplayUser` on a loopback server; see `evaluate_tau2`."""
    with LoopbackOpenAIServer(ReplayUser(), model=USER_MODEL) as server:
        return await evaluate_tau2(
            ReplayPolicy(),
            domains=domains,
            split=split,
            user_simulator=server.base_url,
            user_model=USER_MODEL,
            limit=limit,
            out=out,
            progress=progress,
            concurrency=concurrency,
        )
