"""The user simulator: holds the private facts, answers in persona, decides when it is done."""

from __future__ import annotations

from typing import Any

from trustee_rl.lm.base import LM
from trustee_rl.schema import Message, Task
from trustee_rl.sim.coherence import (
    asks,
    echo_problem,
    placeholder_problem,
    repetition_problem,
    unanswered_problem,
    voice_problem,
)
from trustee_rl.sim.prompts import load_prompt
from trustee_rl.sim.structured import SimulatorContext, ask_json

REPLY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reply": {"type": "string", "minLength": 1, "maxLength": 300},
        "done": {"type": "boolean"},
    },
    "required": ["reply", "done"],
    "additionalProperties": False,
}


def transcript(messages: list[Message]) -> str:
    """What the user can see: the spoken turns only, never tool traffic."""
    lines = []
    for message in messages:
        if message.role == "user":
            lines.append(f"User: {message.content}")
        elif message.role == "assistant" and message.content:
            lines.append(f"Assistant: {message.content}")
    return "\n".join(lines)


class UserSimulator:
    def __init__(self, lm: LM, task: Task, context: SimulatorContext) -> None:
        self.lm = lm
        self.task = task
        self.context = context
        self.prompt = load_prompt("user")

    def opening(self) -> Message:
        return Message(role="user", content=self.task.initial_message)

    async def reply(self, conversation: list[Message], turn: int) -> tuple[Message, bool]:
        """The user's next message and whether the user considers the conversation over."""
        task = self.task
        facts = "; ".join(
            f"{key}: {value}" for key, value in task.private_facts.items()
        ) or self.prompt.text("no_facts")
        messages = self.prompt.render(
            persona=task.persona,
            persona_style=load_prompt("persona_style").text(task.persona),
            domain_title=task.domain.replace("_", " "),
            goal=task.goal,
            facts=facts,
            transcript=transcript(conversation),
        )
        last_agent = next(
            (m.content or "" for m in reversed(conversation) if m.role == "assistant"), ""
        )
        earlier = [m.content or "" for m in conversation if m.role == "user"]
        value = await ask_json(
            self.lm,
            self.context,
            role="user",
            prompt=self.prompt,
            messages=messages,
            schema=REPLY_SCHEMA,
            seed_labels=("user", turn),
            check=lambda v: self._complaint(v["reply"], last_agent, earlier),
            max_tokens=160,
        )
        return Message(role="user", content=value["reply"]), bool(value["done"])

    def _complaint(self, reply: str, question: str, earlier: list[str]) -> str | None:
        """What is wrong with `reply` to the agent's last message `question`, as the complaint the
        simulator gets on its retry; None when nothing is."""
        text = reply.lower()
        if reason := placeholder_problem(reply):
            return self.prompt.text("placeholder_complaint", reason=reason)
        if repetition_problem(reply):
            return self.prompt.text("repeats_complaint")
        if echo_problem(reply, earlier):
            return self.prompt.text("copies_complaint")
        if voice_problem(reply):
            return self.prompt.text("assistant_voice_complaint")
        named = [tool.name for tool in self.task.tools if tool.name.lower() in text]
        if named:
            return self.prompt.text("names_functions_complaint", names=", ".join(named))
        facts = self.task.private_facts
        if not asks(question):
            volunteered = [key for key, value in facts.items() if value.lower() in text]
            if volunteered:
                return self.prompt.text("volunteered_complaint", facts=", ".join(volunteered))
        elif reason := unanswered_problem(question, reply, facts):
            return self.prompt.text("unanswered_complaint", reason=reason)
        return None
