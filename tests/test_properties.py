"""Properties of what reads model output and user settings, over generated input: the tool-call
parser, JSON repair, argument validation and `--set` parsing fail only in their documented way."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from trustee_rl.cli_common import one_line
from trustee_rl.lm.hermes import CALL_OPEN, format_tool_call, parse_assistant_text
from trustee_rl.lm.json_repair import JSONRepairError, parse_json_document
from trustee_rl.schema import ToolCall
from trustee_rl.settings import load_settings
from trustee_rl.sim.tools import call_error
from trustee_rl.simulation import SimulateConfig

from .conftest import make_task

# Bounded and derandomized: the same examples on every run, in seconds, and nothing written to disk.
BOUNDED = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Pieces of what models write around calls and JSON, so generated text hits the parsers' branches
# far more often than uniform text would.
FRAGMENTS = [
    CALL_OPEN,
    "</tool_call>",
    "{",
    "}",
    "[",
    "]",
    '"',
    ":",
    ",",
    '"name"',
    '"arguments"',
    '"get_weather"',
    '"city"',
    "null",
    "true",
    "True",
    "None",
    "NaN",
    "-Infinity",
    "1e999",
    "12",
    "\\",
    "\\u00",
    "```",
    "```json\n",
    " ",
    "\n",
]
model_text = st.one_of(
    st.text(max_size=80),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=40).map("".join),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(FRAGMENTS),  # a string holding `</tool_call>` must not end its call
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)
# Prose a model might write around a call: anything but the opening tag.
prose = st.text(max_size=40).filter(lambda text: CALL_OPEN not in text)


def valid_json(value: Any) -> bool:
    """Whether `value` dumps to standard JSON (no NaN or Infinity) that reads back equal."""
    return bool(json.loads(json.dumps(value, allow_nan=False)) == value)


# -- the tool-call parser -------------------------------------------------------------------------


@BOUNDED
@given(model_text)
def test_parser_reads_any_text_and_flags_what_is_not_a_call(text: str) -> None:
    reply, calls = parse_assistant_text(text)
    assert isinstance(reply, str)
    # Each call starts at a tag; a tag inside a call's body belongs to that call.
    assert bool(calls) == (CALL_OPEN in text)
    assert len(calls) <= text.count(CALL_OPEN)
    for call in calls:
        if call.parse_error is None:
            assert isinstance(call.name, str) and isinstance(call.arguments, dict)
            assert valid_json(call.arguments)
        else:
            assert call.arguments == {}


@BOUNDED
@given(st.text(max_size=200).filter(lambda text: CALL_OPEN not in text))
def test_text_without_a_call_tag_has_no_calls(text: str) -> None:
    assert parse_assistant_text(text) == (text.strip(), [])


@BOUNDED
@given(prose, st.lists(st.tuples(st.text(max_size=16), json_objects), min_size=1, max_size=3))
def test_rendered_calls_parse_back_to_the_same_calls(
    before: str, written: list[tuple[str, dict[str, Any]]]
) -> None:
    calls = [ToolCall(name=name, arguments=arguments) for name, arguments in written]
    text = before + "\n" + "\n".join(format_tool_call(call) for call in calls)
    reply, parsed = parse_assistant_text(text)
    assert reply == before.strip()
    assert [(c.name, c.arguments, c.parse_error) for c in parsed] == [
        (name, arguments, None) for name, arguments in written
    ]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('{"name": "a", "arguments": {"x": NaN}}', "NaN is not valid JSON"),
        ('{"name": "a", "arguments": {"x": 1e999}}', "number 1e999 is out of range"),
        ("[" * 50_000, "nested too deeply"),
        ('{"name": "a", "arguments": {"x": ' + "1" * 5000 + "}}", "Exceeds the limit"),
    ],
)
def test_parser_flags_what_json_cannot_carry(body: str, reason: str) -> None:
    _, [call] = parse_assistant_text(f"{CALL_OPEN}{body}</tool_call>")
    assert call.parse_error is not None and reason in call.parse_error


# -- JSON repair ----------------------------------------------------------------------------------


@BOUNDED
@given(model_text)
def test_repair_returns_valid_json_or_its_own_error(text: str) -> None:
    try:
        value = parse_json_document(text)
    except JSONRepairError as error:
        assert str(error) and "\n" not in str(error)
    else:
        assert valid_json(value)


@BOUNDED
@given(
    st.text(max_size=30).filter(lambda text: not set(text) & set('{}[]`"')),
    json_objects | st.lists(json_values, max_size=4),
    st.text(max_size=30).filter(lambda text: not set(text) & set("`")),
)
def test_a_document_in_prose_comes_back_unchanged(
    before: str, document: dict[str, Any] | list[Any], after: str
) -> None:
    assert parse_json_document(f"{before}{json.dumps(document)}{after}") == document


@BOUNDED
@given(json_objects.filter(bool), st.data())
def test_a_document_cut_short_repairs_to_valid_json_or_fails_clearly(
    document: dict[str, Any], data: st.DataObject
) -> None:
    text = json.dumps(document)
    cut = data.draw(st.integers(min_value=1, max_value=len(text)))
    try:
        value = parse_json_document(text[:cut])
    except JSONRepairError:
        return
    assert valid_json(value)


@pytest.mark.parametrize(
    "text",
    [
        "[NaN]",
        '{"a": Infinity}',
        '{"a": 1e999}',
        "[" * 50_000 + "]" * 50_000,
        "[" + "1" * 5000 + "]",
    ],
)
def test_repair_refuses_what_json_cannot_carry(text: str) -> None:
    with pytest.raises(JSONRepairError):
        parse_json_document(text)


# -- argument validation against a tool schema ---------------------------------------------------


@BOUNDED
@given(model_text)
def test_argument_validation_of_any_reply_only_ever_explains(text: str) -> None:
    task = make_task()
    for call in parse_assistant_text(text)[1]:
        problem = call_error(call, task)
        assert problem is None or (isinstance(problem, str) and problem)
        if problem is None:
            assert call.parse_error is None and task.tool(call.name) is not None


@BOUNDED
@given(
    st.text(min_size=1, max_size=40),
    st.sampled_from([None, "celsius", "fahrenheit"]),
    json_objects,
)
def test_a_valid_call_survives_the_round_trip_and_extra_arguments_are_refused(
    city: str, unit: str | None, extra: dict[str, Any]
) -> None:
    task = make_task()
    arguments: dict[str, Any] = {"city": city} | ({"unit": unit} if unit else {})
    [call] = parse_assistant_text(
        format_tool_call(ToolCall(name="get_weather", arguments=arguments))
    )[1]
    assert call_error(call, task) is None
    unknown = {key: value for key, value in extra.items() if key not in arguments}
    if unknown:
        call = ToolCall(name="get_weather", arguments=arguments | unknown)
        assert "invalid arguments for get_weather" in (call_error(call, task) or "")


# -- settings overrides ---------------------------------------------------------------------------


KEYS = ["", "=", "episodes=", "seed=", "judge.mode=", "curriculum.initial_level=", "taskgen="]
overrides = st.lists(st.builds(str.__add__, st.sampled_from(KEYS), model_text), max_size=3)


@BOUNDED
@given(overrides)
def test_any_set_override_is_applied_or_refused_in_one_line(overrides: list[str]) -> None:
    try:
        load_settings(SimulateConfig, {}, None, overrides)
    except (ValueError, ValidationError) as error:
        message = one_line(error)
        assert message and "\n" not in message
