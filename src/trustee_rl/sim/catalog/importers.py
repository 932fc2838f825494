"""Reading catalog sources and telling their shape: a catalog, an OpenAPI 3 document, an MCP
`tools/list` response, or OpenAI function schemas; the last three become one domain each.

A source is JSON, JSON Lines (one OpenAI function per line) or YAML, told apart by its content.
"""

from __future__ import annotations

import json
import re
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal

import yaml

from trustee_rl.sim.catalog.openapi import openapi_tools
from trustee_rl.sim.catalog.schemas import OPEN_RESULT, SourceProblem

__all__ = ["MAX_FILE_BYTES", "Shape", "imported_domain", "read_document", "shape_of"]

Shape = Literal["catalog", "openapi", "mcp", "openai"]

MAX_FILE_BYTES = 32 * 1024 * 1024
_DOMAIN_NAME_LENGTH = 64
# MCP tool annotations, as the sentence a tool description gains when the hint is set.
_HINT_SENTENCES = {
    "readOnlyHint": "It only reads; it changes nothing.",
    "destructiveHint": "It may delete or overwrite data.",
    "idempotentHint": "Repeating a call with the same arguments has no further effect.",
    "openWorldHint": "It reaches systems outside this service.",
}


def read_document(source: Path | Traversable) -> Any:
    """The parsed content of `source`; SourceProblem, in one line, when it cannot be read."""
    if isinstance(source, Path):
        try:
            size = source.stat().st_size
        except OSError as error:
            raise SourceProblem(f"cannot read: {error.strerror}") from error
        if size > MAX_FILE_BYTES:
            limit = MAX_FILE_BYTES // 2**20
            raise SourceProblem(f"file too large: {size} bytes, over the limit of {limit} MiB")
    try:
        data = source.read_bytes()
    except OSError as error:
        raise SourceProblem(f"cannot read: {error.strerror}") from error
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        byte = data[error.start]
        raise SourceProblem(f"not UTF-8 text: byte 0x{byte:02x} at offset {error.start}") from error
    if not text.strip():
        raise SourceProblem("empty file")
    try:
        if text.lstrip()[0] in "{[":
            return _json_or_lines(text)
        return yaml.load(text, Loader=_YAMLLoader)  # a safe loader, see below
    except RecursionError as error:
        raise SourceProblem("nested too deep to read") from error
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        raise SourceProblem(f"invalid YAML: {where}{error.problem}") from error
    except yaml.YAMLError as error:
        raise SourceProblem(f"invalid YAML: {error}") from error


def _json_or_lines(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        if not str(error).startswith("Extra data"):
            raise SourceProblem(f"invalid JSON: {error}") from error
    values = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                values.append(json.loads(line))
            except json.JSONDecodeError as error:
                where = f"line {number} column {error.colno}"
                raise SourceProblem(f"invalid JSON Lines: {where}: {error.msg}") from error
            except ValueError as error:
                raise SourceProblem(f"invalid JSON Lines: line {number}: {error}") from error
    return values


class _YAMLLoader(yaml.SafeLoader):
    """The safe loader, keeping dates as the strings JSON Schema expects."""


_YAMLLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def shape_of(document: Any) -> Shape:
    """Which shape `document` has; anything unrecognised counts as a catalog, whose loader then
    says what is wrong with it."""
    if isinstance(document, dict):
        if "openapi" in document or "swagger" in document:
            return "openapi"
        if "jsonrpc" in document:
            return "mcp"
        if "function" in document or "parameters" in document:
            return "openai"
        items = _objects(document.get("tools"))
        if any("inputSchema" in item for item in items):
            return "mcp"
        # `{"tools": [...]}` as in a chat request; a domain's tools are not wrapped in "function".
        if "domain" not in document and any("function" in item for item in items):
            return "openai"
        return "catalog"
    items = _objects(document)
    if any("inputSchema" in item for item in items):
        return "mcp"
    if any("tools" in item or "domain" in item for item in items):
        return "catalog"
    if any("function" in item or "parameters" in item for item in items):
        return "openai"
    return "catalog"


def _objects(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def imported_domain(
    document: Any, shape: Shape, source_name: str, notes: list[str]
) -> dict[str, Any]:
    """A raw domain object from a source of an importable shape. It is named after the API's
    title or, lacking one, `source_name`; `notes` gets what the conversion dropped."""
    if shape == "openapi":
        info = document.get("info")
        info = info if isinstance(info, dict) else {}
        title = _text(info.get("title")) or source_name
        description = _first_paragraph(info.get("description")) or title
        tools = openapi_tools(document, notes)
    elif shape == "mcp":
        title, description, tools = source_name, f"Tools of {source_name}.", _mcp_tools(document)
    elif shape == "openai":
        title, description = source_name, f"Tools of {source_name}."
        tools = _openai_tools(document)
    else:
        raise SourceProblem(
            "not an OpenAPI 3 document, an MCP tools/list response or OpenAI function schemas"
        )
    return {"domain": _domain_name(title), "description": description, "tools": tools}


def _domain_name(title: str) -> str:
    """A catalog domain name made from a title: lower-case words joined by underscores, without
    a trailing "API" (prompts name the domain: "a petstore assistant", not "a petstore api ...")."""
    words = re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")
    words = re.sub(r"^[^a-z]+|_api$", "", words)
    return words[:_DOMAIN_NAME_LENGTH].rstrip("_") or "imported"


def _mcp_tools(document: Any) -> list[dict[str, Any]]:
    if isinstance(document, dict) and "jsonrpc" in document:
        error = document.get("error")
        if isinstance(error, dict):
            raise SourceProblem(f"an MCP error response: {error.get('message', error)}")
        document = document.get("result")
    raw_tools = document.get("tools") if isinstance(document, dict) else document
    if not isinstance(raw_tools, list) or not raw_tools:
        raise SourceProblem("the MCP response lists no tools")
    tools = []
    for position, raw in enumerate(raw_tools):
        if not isinstance(raw, dict):
            raise SourceProblem(f"tool #{position}: expected an object, got {type(raw).__name__}")
        if "inputSchema" not in raw:
            raise SourceProblem(f"tool {raw.get('name', position)!r}: no inputSchema")
        annotations = raw.get("annotations")
        annotations = annotations if isinstance(annotations, dict) else {}
        title = raw.get("title", annotations.get("title"))
        hints = [text for hint, text in _HINT_SENTENCES.items() if annotations.get(hint) is True]
        if annotations.get("readOnlyHint") is True and annotations.get("destructiveHint") is True:
            hints.remove(_HINT_SENTENCES["destructiveHint"])  # only meaningful for writers
        tools.append(
            {
                "name": raw.get("name"),
                "description": " ".join([_described(raw, title), *hints]),
                "parameters": raw["inputSchema"],
                "returns": raw.get("outputSchema") or OPEN_RESULT,
            }
        )
    return tools


def _openai_tools(document: Any) -> list[dict[str, Any]]:
    if isinstance(document, dict):
        document = document.get("tools", [document])
    if not isinstance(document, list) or not document:
        raise SourceProblem("no function schemas")
    tools = []
    for position, item in enumerate(document):
        function = item.get("function", item) if isinstance(item, dict) else item
        if not isinstance(function, dict):
            raise SourceProblem(f"function #{position}: expected an object")
        tools.append(
            {
                "name": function.get("name"),
                "description": _described(function, None),
                "parameters": function.get("parameters", {"type": "object", "properties": {}}),
                "returns": OPEN_RESULT,
            }
        )
    return tools


def _described(raw: dict[str, Any], title: Any) -> str:
    """The description of a tool, else its title, else its name in words."""
    for text in (raw.get("description"), title, str(raw.get("name", "")).replace("_", " ")):
        if _text(text):
            return _text(text)
    return ""


def _first_paragraph(text: Any) -> str:
    return _text(text.strip().split("\n\n")[0]) if isinstance(text, str) else ""


def _text(value: Any) -> str:
    return " ".join(value.split()) if isinstance(value, str) else ""
