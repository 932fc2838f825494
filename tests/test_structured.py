from __future__ import annotations

import pytest

from trustee_rl.lm.openai_http import OpenAIHTTPLM
from trustee_rl.schema import SimCall
from trustee_rl.seeding import derive_seed
from trustee_rl.sim.prompts import load_prompt
from trustee_rl.sim.structured import SimulatorContext, SimulatorError, ask_json, repetitive
from trustee_rl.testing.openai_server import LoopbackOpenAIServer, Reply, ScriptedResponder

SCHEMA = {
    "type": "object",
    "properties": {"reply": {"type": "string", "maxLength": 24}, "done": {"type": "boolean"}},
    "required": ["reply", "done"],
    "additionalProperties": False,
}


def test_repetition_detector() -> None:
    assert repetitive(
        "high priority, high severity, and high priority, high severity, and high priority, high"
    )
    assert not repetitive(
        "Please book a table for two at eight tonight, by the window if possible."
    )


async def test_retries_feed_the_complaint_back_and_log_every_try() -> None:
    replies = [
        Reply(content='{"reply": "x", "done": "yes"}'),  # schema violation
        Reply(content='{"reply": "ok ok ok ok ok ok", "done": true}'),  # fails the check
        Reply(content='{"reply": "thanks", "done": true}'),
    ]
    log: list[SimCall] = []
    with LoopbackOpenAIServer(ScriptedResponder(replies)) as server:
        lm = OpenAIHTTPLM(server.base_url, model="m", structured_output="json_schema")
        value = await ask_json(
            lm,
            SimulatorContext(5, log.append),
            role="user",
            prompt=load_prompt("user"),
            messages=[{"role": "user", "content": "hi"}],
            schema=SCHEMA,
            seed_labels=("user", 1),
            check=lambda v: "repeats" if repetitive(v["reply"], span=1) else None,
        )
        await lm.aclose()
        second_request = server.requests[1]["messages"]
    assert value == {"reply": "thanks", "done": True}
    assert [c.attempts for c in log] == [1, 2, 3]
    first = derive_seed(5, "user", 1)
    assert [c.seed for c in log] == [first, first + 1, first + 2]
    assert log[0].error and "schema violation" in log[0].error
    assert log[1].error == "repeats" and log[2].error is None
    assert log[0].prompt_version == "user@2"
    assert "rejected" in second_request[-1]["content"]


async def test_exhausted_retries_raise_instead_of_inventing_a_value() -> None:
    replies = [Reply(content='{"reply": 1}')] * 3
    log: list[SimCall] = []
    with LoopbackOpenAIServer(ScriptedResponder(replies)) as server:
        lm = OpenAIHTTPLM(server.base_url, model="m", structured_output="json_schema")
        with pytest.raises(SimulatorError, match="no valid output in 3 tries"):
            await ask_json(
                lm,
                SimulatorContext(1, log.append),
                role="judge",
                prompt=load_prompt("judge"),
                messages=[],
                schema=SCHEMA,
                seed_labels=("judge",),
            )
        await lm.aclose()
    assert len(log) == 3 and all(c.error for c in log)
