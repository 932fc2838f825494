"""Pull one JSON document out of free model output, repairing the slips models commonly make.

Only what JSON can carry comes out: NaN, Infinity and numbers beyond a float's range are refused,
so whatever this returns dumps back to valid JSON."""

from __future__ import annotations

import json
import math
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
# Deeper than Python's json reads; refusing early keeps deep garbage linear to scan.
_MAX_DEPTH = 512
_REASON_CHARS = 160


def loads(text: str, *, strict: bool = True) -> Any:
    """`json.loads` for JSON as the standard defines it; every failure is a ValueError (deep
    nesting and huge integers included). `strict=False` lets control characters stand unescaped
    inside strings."""
    value, end = decode_prefix(text, skip_space(text, 0), strict=strict)
    if skip_space(text, end) != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def decode_prefix(text: str, start: int, *, strict: bool = True) -> tuple[Any, int]:
    """The JSON value that begins at `start`, and the index just after it."""
    decoder = json.JSONDecoder(strict=strict, parse_constant=_refuse_constant, parse_float=_finite)
    try:
        value, end = decoder.raw_decode(text, start)
    except RecursionError as error:
        raise ValueError("nested too deeply") from error
    return value, end


def skip_space(text: str, index: int) -> int:
    """The first index from `index` on that is not JSON whitespace."""
    while index < len(text) and text[index] in " \t\n\r":
        index += 1
    return index


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def parse_json_document(text: str) -> Any:
    """Return the first JSON document in `text` (fenced, surrounded by prose, or cut short)."""
    first_error: str | None = None
    for chunk in _chunks(text):
        try:
            return loads(chunk, strict=False)
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
        return loads("".join(scan.out), strict=False)
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
        elif (word := _WORD.match(text, index)) is not None:
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
        if len(scan.stack) == _MAX_DEPTH:
            raise ValueError(f"nested deeper than {_MAX_DEPTH} at offset {index}")
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
            return loads(body + stack[::-1], strict=False)
        except ValueError:
            continue
    raise ValueError("truncated JSON could not be closed")
