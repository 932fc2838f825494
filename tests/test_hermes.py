from __future__ import annotations

from typing import Any

from trustee_rl.lm.hermes import parse_assistant_text, to_text_messages, tools_system_prompt
from trustee_rl.schema import Message, ToolCall

from .conftest import WEATHER


def test_parses_prose_and_parallel_calls() -> None:
    text = (
        'Checking both.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n'
        '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Rome\\"}"}</tool_call>'
    )
    prose, calls = parse_assistant_text(text)
    assert prose == "Checking both."
    assert [(c.name, c.arguments, c.parse_error) for c in calls] == [
        ("get_weather", {"city": "Oslo"}, None),
        ("get_weather", {"city": "Rome"}, None),
    ]


def test_malformed_calls_are_kept_with_a_parse_error() -> None:
    _, calls = parse_assistant_text(
        '<tool_call>{"name": "get_weather", "arguments": {"city": </tool_call>'
    )
    assert calls[0].parse_error and calls[0].parse_error.startswith("not JSON")
    _, calls = parse_assistant_text('<tool_call>{"arguments": {}}</tool_call>')
    assert calls[0].parse_error == "expected an object with a string 'name'"
    _, calls = parse_assistant_text('<tool_call>{"name": "x", "arguments": [1]}</tool_call>')
    assert (calls[0].name, calls[0].parse_error) == ("x", "arguments are not a JSON object")


def test_unterminated_call_at_max_tokens_still_parses() -> None:
    _, calls = parse_assistant_text(
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}'
    )
    assert calls[0].arguments == {"city": "Oslo"}


def test_plain_text_has_no_calls() -> None:
    assert parse_assistant_text("Which city?") == ("Which city?", [])


def test_text_rendering_puts_tools_in_system_and_results_in_user_turns() -> None:
    call = ToolCall(id="c1", name="get_weather", arguments={"city": "Oslo"})
    messages = [
        Message(role="system", content="Be brief."),
        Message(role="user", content="Weather in Oslo?"),
        Message(role="assistant", content=None, tool_calls=[call]),
        Message(role="tool", content='{"temperature": 3}', tool_call_id="c1", name="get_weather"),
        Message(role="tool", content='{"temperature": 4}', tool_call_id="c2", name="get_weather"),
        Message(role="assistant", content="It is 3 degrees."),
    ]
    rendered = to_text_messages(messages, [WEATHER])
    assert [m["role"] for m in rendered] == ["system", "user", "assistant", "user", "assistant"]
    assert rendered[0]["content"] == tools_system_prompt("Be brief.", [WEATHER])
    assert '"name": "get_weather"' in rendered[0]["content"] and "<tools>" in rendered[0]["content"]
    assert (
        rendered[2]["content"]
        == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    )
    assert rendered[3]["content"].count("<tool_response>") == 2
    _, reparsed = parse_assistant_text(rendered[2]["content"])
    assert reparsed[0].arguments == call.arguments


def test_openai_wire_messages_render_as_plain_text_turns() -> None:
    """What the embedded backend sends its ChatML template: arguments arrive JSON-encoded."""
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 3}'},
        {"role": "tool", "tool_call_id": "call_2", "content": "rain"},
    ]
    assert to_text_messages(messages, []) == [
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n'
            "</tool_call>",
        },
        {
            "role": "user",
            "content": '<tool_response>\n{"temp": 3}\n</tool_response>\n'
            "<tool_response>\nrain\n</tool_response>",
        },
    ]
