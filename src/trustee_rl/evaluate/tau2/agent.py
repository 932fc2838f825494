"""The policy under evaluation as tau2's agent.

tau2's orchestrator is synchronous, so episodes run on worker threads; each agent turn is sent
back to the caller's event loop as one `Policy.act` call, where a batching policy answers the
turns of all episodes waiting at the same moment together.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tau2.agent.base import LocalAgent as Tau2LocalAgent
from tau2.agent.llm_agent import AGENT_INSTRUCTION, SYSTEM_PROMPT
from tau2.data_model.message import AssistantMessage, MultiToolMessage, ToolMessage, UserMessage
from tau2.data_model.message import ToolCall as Tau2ToolCall

from trustee_rl.policy.base import Conversation, Policy
from trustee_rl.schema import Message, Tool, ToolCall

# How often a waiting episode thread checks whether the run was aborted.
POLL_S = 0.25


class AgentFailed(Exception):
    """The agent's turn cannot be sent (empty): the episode ends as tau2's AGENT_ERROR, reward 0."""


class Aborted(Exception):
    """Another episode failed and the run is stopping."""


class PolicyBridge:
    """Lets an episode thread ask the async policy, on the caller's loop, for a turn."""

    def __init__(
        self, policy: Policy, loop: asyncio.AbstractEventLoop, abort: threading.Event
    ) -> None:
        self.policy = policy
        self.loop = loop
        self.abort = abort

    def ask(self, conversation: Conversation) -> Message:
        """Called from an episode thread; blocks until the policy answers or the run aborts."""
        if self.abort.is_set():
            raise Aborted
        future = asyncio.run_coroutine_threadsafe(self.policy.act([conversation]), self.loop)
        while True:
            try:
                return future.result(timeout=POLL_S)[0]
            except TimeoutError:
                if self.abort.is_set():
                    future.cancel()
                    raise Aborted from None


@dataclass
class AgentState:
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


class PolicyAgent(Tau2LocalAgent):  # type: ignore[misc]
    """tau2's view of the policy: tau2's standard system prompt and tools, the policy answering.
    Every turn's `Conversation.key` names the episode ("domain:trial:task id")."""

    def __init__(
        self,
        tau2_tools: list[Any],
        domain_policy: str,
        ask: Callable[[Conversation], Message],
        key: str,
    ) -> None:
        super().__init__(tools=tau2_tools, domain_policy=domain_policy)
        self._tools = tau2_tools_as_ours(tau2_tools)
        self._ask = ask
        self._key = key
        self._system = SYSTEM_PROMPT.format(
            agent_instruction=AGENT_INSTRUCTION, domain_policy=domain_policy
        )

    def get_init_state(self, message_history: list[Any] | None = None) -> AgentState:
        state = AgentState([Message(role="system", content=self._system)])
        for message in message_history or []:
            state.add(message)
        return state

    def generate_next_message(
        self, message: Any, state: AgentState
    ) -> tuple[AssistantMessage, AgentState]:
        state.add(message)
        reply = self._ask(Conversation(list(state.messages), self._tools, key=self._key))
        content = reply.content if reply.content and reply.content.strip() else None
        if content is None and not reply.tool_calls:
            raise AgentFailed("the agent sent an empty message")
        state.add(reply)
        return AssistantMessage(
            role="assistant",
            content=content,
            tool_calls=[
                Tau2ToolCall(id=call.id, name=call.name, arguments=call.arguments)
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
        """Evaluation decodes greedily; there is nothing to seed."""


def tau2_tools_as_ours(tau2_tools: list[Any]) -> list[Tool]:
    tools: list[Tool] = []
    for tool in tau2_tools:
        try:
            tools.append(Tool.from_openai(tool.openai_schema))
        except ValueError as error:
            raise ValueError(f"tau2 tool {tool.name!r} has an unusable schema: {error}") from error
    return tools


def episode_key(domain: str, trial: int, task_id: str) -> str:
    """The task id goes last: telecom's ids hold colons."""
    return f"{domain}:{trial}:{task_id}"
