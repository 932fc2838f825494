"""JSON-Schema structure for catalogs: where subschemas sit, local `$ref`s inlined within limits.

Tool schemas travel into prompts and response formats, and example arguments are drawn from them,
so each `$ref` into the same document is replaced by a copy of its target. A reference that leads
back to itself has no finite inlining and is refused; so is a schema that grows past
MAX_SCHEMA_VALUES JSON values or MAX_SCHEMA_DEPTH levels. Both limits are checked while copying,
so neither a cycle nor a reference bomb can hang the loader or exhaust the stack.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

__all__ = [
    "MAX_SCHEMA_DEPTH",
    "MAX_SCHEMA_VALUES",
    "OPEN_RESULT",
    "SCHEMA_KEYWORDS",
    "SCHEMA_LIST_KEYWORDS",
    "SCHEMA_MAP_KEYWORDS",
    "SourceProblem",
    "follow_refs",
    "inline_refs",
]

# Keywords whose value is one subschema / a list of subschemas / a name -> subschema map.
SCHEMA_KEYWORDS = (
    "items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
    "unevaluatedItems", "unevaluatedProperties",
)  # fmt: skip
SCHEMA_LIST_KEYWORDS = ("anyOf", "oneOf", "allOf", "prefixItems")
SCHEMA_MAP_KEYWORDS = (
    "properties", "patternProperties", "$defs", "definitions", "dependentSchemas",
)  # fmt: skip

# What a tool returns when its source declares no output schema: a status and a message the tool
# simulator can always fill, and room for any structured data besides.
OPEN_RESULT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"enum": ["ok", "error"]},
        "message": {"type": "string", "maxLength": 300},
        "data": {"type": "object", "description": "Any structured result."},
    },
    "required": ["status", "message"],
}

MAX_SCHEMA_DEPTH = 64  # levels of JSON nesting; each followed `$ref` counts as one more
MAX_SCHEMA_VALUES = 5_000  # JSON values (objects, arrays, scalars) in one inlined schema
# Definitions only serve `$ref`s; once those are inlined they would only lengthen prompts.
_DEFINITIONS = ("$defs", "definitions")


class SourceProblem(ValueError):
    """A catalog source cannot be used; one line, without the file name (the loader adds it)."""


def inline_refs(schema: Any, root: Any) -> Any:
    """A copy of `schema` with each `$ref` (a JSON pointer into `root`) replaced by its target.

    Keywords next to a `$ref` win over the target's (a local `description` refines a shared
    schema). Definitions at the top of `schema` are dropped; they have been inlined where used.
    """
    inliner = _Inliner(root)
    if isinstance(schema, dict):
        schema = {key: value for key, value in schema.items() if key not in _DEFINITIONS}
    return inliner.copy(schema, depth=0, chain=())


def follow_refs(node: Any, root: Any) -> Any:
    """`node`, or what its `$ref` (and the target's own, and so on) points at in `root`; nothing
    inside is inlined. For OpenAPI objects that may be references, such as parameters."""
    seen: list[str] = []
    inliner = _Inliner(root)
    while isinstance(node, dict) and isinstance(node.get("$ref"), str):
        ref = node["$ref"]
        if ref in seen:
            raise SourceProblem(f"recursive $ref {ref!r} ({' -> '.join((*seen, ref))})")
        seen.append(ref)
        node = inliner.target(ref)
    return node


class _Inliner:
    def __init__(self, root: Any) -> None:
        self.root = root
        self.values = 0

    def copy(self, node: Any, depth: int, chain: tuple[str, ...]) -> Any:
        self.values += 1
        if self.values > MAX_SCHEMA_VALUES:
            raise SourceProblem(
                f"schema too large: over the limit of {MAX_SCHEMA_VALUES} JSON values once $refs "
                "are inlined"
            )
        if depth > MAX_SCHEMA_DEPTH:
            raise SourceProblem(
                f"schema nested too deep: over the limit of {MAX_SCHEMA_DEPTH} levels once $refs "
                "are inlined"
            )
        if isinstance(node, list):
            return [self.copy(item, depth + 1, chain) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if not isinstance(ref, str):
            return {key: self.copy(value, depth + 1, chain) for key, value in node.items()}
        if ref in chain:
            cycle = " -> ".join((*chain[chain.index(ref) :], ref))
            raise SourceProblem(f"recursive $ref {ref!r} ({cycle}); a tool schema must be finite")
        target = self.copy(self.target(ref), depth + 1, (*chain, ref))
        siblings = {key: value for key, value in node.items() if key != "$ref"}
        if not siblings:
            return target
        if not isinstance(target, dict):
            raise SourceProblem(f"$ref {ref!r} points at {_kind(target)}, not a schema object")
        return {**target, **{key: self.copy(v, depth + 1, chain) for key, v in siblings.items()}}

    def target(self, ref: str) -> Any:
        if not ref.startswith("#"):
            raise SourceProblem(
                f"$ref {ref!r} points outside the document; only local references are supported"
            )
        if ref != "#" and not ref.startswith("#/"):
            raise SourceProblem(f"$ref {ref!r}: anchors are not supported, use a JSON pointer")
        node = self.root
        for raw in ref[2:].split("/") if ref != "#" else []:
            part = unquote(raw).replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise SourceProblem(f"$ref {ref!r} points at nothing")
        return node


def _kind(value: Any) -> str:
    return "an array" if isinstance(value, list) else type(value).__name__
