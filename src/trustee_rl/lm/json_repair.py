"""Pull one JSON document out of free model output, repairing the slips models commonly make."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


class JSONRepairError(ValueError):
    """No JSON document could be read from the text, even after repairs."""


_FENCE = re.compile(r"```[\w+-]*[ \t]*\n?(.*?)```", re.DOTALL)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PYTHON_LITERALS = {"True": "true", "False": "false", "None": "null"}
_CLOSER_OF = {"{": "}", "[": "]"}
# Openers tried per chunk: enough to skip bracketed prose, bounded so garbage stays cheap.
_MAX_STARTS = 32
_REASON_CHARS = 160


def parse_json_document(text: str) -> Any:
    """Return the first JSON document in `text` (fenced, surrounded by prose, or cut short)."""
    first_error: str | None = None
    for chunk in _chunks(text):
        try:
            return json.loads(chunk, strict=False)
        except ValueError:
            pass
        for start in _starts(chunk):
            try:
                return _parse_from(chunk, start)
            except ValueError as error:
                first_error = first_error or str(error)
    raise JSONRepairError((first_error or "no JSON object or array found")[:_REASON_CHARS])


def _chunks(text: str) -> Iterator[str]:
    """Fenced code blocks first (prose around them may hold stray brackets), then the whole text."""
    for match in _FENCE.finditer(text):
        yield match.group(1).strip()
    yield text.strip()


def _starts(chunk: str) -> Iterator[int]:
    found = 0
    for index, char in enumerate(chunk):
        if char in _CLOSER_OF:
            yield index
            found += 1
            if found == _MAX_STARTS:
                return


@dataclass
class _Scan:
    """The repaired text from one opener on, and where it stopped."""

    out: list[str]
    # Closers still owed, outermost first; empty once the document is balanced.
    stack: str
    # (length of `out`, closers owed there) at each point the document can be cut and closed.
    cuts: list[tuple[int, str]]
    in_string: bool = False
    # Index in `out` of a backslash escape that the text ended inside of.
    open_escape: int | None = None


def _parse_from(chunk: str, start: int) -> Any:
    scan = _scan(chunk, start)
    if not scan.stack:
        return json.loads("".join(scan.out), strict=False)
    return _close_truncated(scan)


def _scan(text: str, start: int) -> _Scan:
    """Copy text from an opener to its matching closer, fixing literals and trailing commas."""
    scan = _Scan(out=[], stack="", cuts=[])
    escape_at: int | None = None
    index = start
    while index < len(text):
        char = text[index]
        if scan.in_string:
            escape_at = _string_char(scan, char, escape_at)
        elif char.isalpha():
            word = _WORD.match(text, index)
            assert word is not None  # an alphabetic char always starts a word
            scan.out.append(_PYTHON_LITERALS.get(word.group(), word.group()))
            index = word.end()
            continue
        elif _structural_char(scan, char, index):
            return scan
        index += 1
    scan.open_escape = escape_at if scan.in_string else None
    return scan


def _string_char(scan: _Scan, char: str, escape_at: int | None) -> int | None:
    """Copy one char inside a string; return where the escape in progress began, if any."""
    scan.out.append(char)
    position = len(scan.out) - 1
    if escape_at is not None:
        sequence = "".join(scan.out[escape_at:])
        done = not sequence.startswith("\\u") or len(sequence) == 6
        return None if done else escape_at
    if char == "\\":
        return position
    if char == '"':
        scan.in_string = False
    return None


def _structural_char(scan: _Scan, char: str, index: int) -> bool:
    """Copy one char outside strings; return True once the document is balanced."""
    if char in _CLOSER_OF:
        scan.out.append(char)
        scan.stack += _CLOSER_OF[char]
        scan.cuts.append((len(scan.out), scan.stack))
    elif char in "}]":
        if not scan.stack or scan.stack[-1] != char:
            raise ValueError(f"unbalanced {char!r} at offset {index}")
        _drop_trailing_comma(scan.out)
        scan.out.append(char)
        scan.stack = scan.stack[:-1]
        return not scan.stack
    elif char == ",":
        scan.cuts.append((len(scan.out), scan.stack))
        scan.out.append(char)
    else:
        if char == '"':
            scan.in_string = True
        scan.out.append(char)
    return False


def _drop_trailing_comma(out: list[str]) -> None:
    end = len(out)
    while end and out[end - 1].isspace():
        end -= 1
    if end and out[end - 1] == ",":
        del out[end - 1 :]


def _close_truncated(scan: _Scan) -> Any:
    """Close text cut short (at max_tokens, say): whole if that parses, else at a cut point."""
    out = scan.out
    if scan.in_string:
        out = out[: scan.open_escape] if scan.open_escape is not None else out
        out = [*out, '"']
    text = "".join(out).rstrip().removesuffix(",")
    candidates = [(text, scan.stack)]
    candidates += [("".join(scan.out[:length]), stack) for length, stack in reversed(scan.cuts)]
    for body, stack in candidates:
        try:
            return json.loads(body + stack[::-1], strict=False)
        except ValueError:
            continue
    raise ValueError("truncated JSON could not be closed")
