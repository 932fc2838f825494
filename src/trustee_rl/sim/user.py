"""The user simulator: holds the private facts, answers in persona, decides when it is done."""

from __future__ import annotations

from typing import Any

from trustee_rl.lm.base import LM
from trustee_rl.schema import Message, Task
from trustee_rl.sim.prompts import load_prompt
from trustee_rl.sim.structured import SimulatorContext, ask_json, repetitive

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
        value = await ask_json(
            self.lm,
            self.context,
            role="user",
            prompt=self.prompt,
            messages=messages,
            schema=REPLY_SCHEMA,
            seed_labels=("user", turn),
            check=lambda v: self._complaint(v["reply"], asked="?" in last_agent),
            max_tokens=160,
        )
        return Message(role="user", content=value["reply"]), bool(value["done"])

    def _complaint(self, reply: str, asked: bool) -> str | None:
        text = reply.lower()
        if repetitive(reply):
            return self.prompt.text("repeats_complaint")
        named = [tool.name for tool in self.task.tools if tool.name.lower() in text]
        if named:
            return self.prompt.text("names_functions_complaint", names=", ".join(named))
        if not asked:
            volunteered = [
                key for key, value in self.task.private_facts.items() if value.lower() in text
            ]
            if volunteered:
                return self.prompt.text("volunteered_complaint", facts=", ".join(volunteered))
        return None
