from __future__ import annotations

from typing import Any

import pytest

from trustee_rl.lm.json_repair import JSONRepairError, parse_json_document


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1, "b": [true, null]}', {"a": 1, "b": [True, None]}),
        ("[1, 2, 3]", [1, 2, 3]),
        ("  42  ", 42),
    ],
)
def test_clean_json_passes_through(text: str, expected: Any) -> None:
    assert parse_json_document(text) == expected


def test_code_fence_is_stripped() -> None:
    text = 'Here it is:\n```json\n{"city": "Paris"}\n```\nAnything else?'
    assert parse_json_document(text) == {"city": "Paris"}


def test_fence_is_preferred_over_bracketed_prose() -> None:
    text = 'Fill in [the form] below.\n```\n["a", "b"]\n```'
    assert parse_json_document(text) == ["a", "b"]


def test_prose_around_document_is_ignored() -> None:
    text = 'Sure! The answer is {"ok": true} and that is all. {"second": 1}'
    assert parse_json_document(text) == {"ok": True}


def test_bracketed_prose_before_document_is_skipped() -> None:
    text = 'Use {placeholders} like [this]: {"name": "Ada"}'
    assert parse_json_document(text) == {"name": "Ada"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1,}', {"a": 1}),
        ("[1, 2, ]", [1, 2]),
        ('{"a": [1, 2,\n],\n}', {"a": [1, 2]}),
    ],
)
def test_trailing_commas_are_removed(text: str, expected: Any) -> None:
    assert parse_json_document(text) == expected


def test_python_literals_become_json() -> None:
    text = '{"done": True, "failed": False, "error": None, "note": "True stays"}'
    assert parse_json_document(text) == {
        "done": True,
        "failed": False,
        "error": None,
        "note": "True stays",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"summary": "the weather is sun', {"summary": "the weather is sun"}),
        ('{"a": {"b": [1, 2', {"a": {"b": [1, 2]}}),
        ('{"a": 1, "b', {"a": 1}),
        ('{"a": 1, "b":', {"a": 1}),
        ('{"a": 1,', {"a": 1}),
        ('["x", "y", "z\\', ["x", "y", "z"]),
        ('{"s": "caf\\u00', {"s": "caf"}),
        ('```json\n{"items": [{"id": 1}, {"id": 2', {"items": [{"id": 1}, {"id": 2}]}),
    ],
)
def test_truncated_output_is_closed(text: str, expected: Any) -> None:
    assert parse_json_document(text) == expected


def test_raw_newline_inside_string_is_accepted() -> None:
    assert parse_json_document('{"text": "line one\nline two"}') == {"text": "line one\nline two"}


def test_escaped_quotes_do_not_end_strings() -> None:
    assert parse_json_document(r'{"q": "say \"hi}\"", "n": 1}') == {"q": 'say "hi}"', "n": 1}


@pytest.mark.parametrize(
    "text",
    ["", "no json at all", "{not: json}", "[1, 2}"],
)
def test_unreadable_text_raises_with_reason(text: str) -> None:
    with pytest.raises(JSONRepairError) as caught:
        parse_json_document(text)
    assert str(caught.value)
    assert len(str(caught.value)) <= 160
    assert isinstance(caught.value, ValueError)
