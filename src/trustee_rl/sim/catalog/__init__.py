"""The tool catalog: domains of realistic tools that tasks are generated from.

A catalog file holds one domain object (`{"domain": name, "description": ..., "tools": [...]}`),
a list of them, or `{"domains": [...]}`; a catalog directory holds such .json files. A file may
instead be an MCP `tools/list` response or OpenAI function schemas (JSON or JSON Lines): that is
one domain named after the file. `import_domain` also reads OpenAPI 3 documents, for
`trustee tasks import`. The shipped seed catalog lives in `domains/` next to this module, one file
per domain.

Tool schemas are made self-contained on loading (local `$ref`s inlined) and must stay within the
size limits of `schemas.py`.

Every string, number and integer property may carry `examples`; they must validate against their
property, and `example_arguments` draws argument values from them.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Iterator, Sequence
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, model_validator

from trustee_rl.schema import Tool
from trustee_rl.sim.catalog.importers import imported_domain, read_document, shape_of
from trustee_rl.sim.catalog.schemas import (
    SCHEMA_KEYWORDS,
    SCHEMA_LIST_KEYWORDS,
    SCHEMA_MAP_KEYWORDS,
    SourceProblem,
    inline_refs,
)

__all__ = [
    "Catalog",
    "CatalogError",
    "Domain",
    "domain_document",
    "example_arguments",
    "import_domain",
    "load_catalog",
]

SHIPPED_PACKAGE = "trustee_rl.sim.catalog"
SHIPPED_DIR = "domains"
_DRAWS_CHECKED = 16


class CatalogError(ValueError):
    """A catalog cannot be loaded; the message is one line naming the file, domain and tool."""


class Domain(BaseModel):
    """One application domain and its tools. Files name it with the key `domain`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        validation_alias=AliasChoices("domain", "name"), pattern=r"^[a-z][a-z0-9_]{0,63}$"
    )
    description: str = Field(min_length=1)
    tools: list[Tool] = Field(min_length=1)

    @model_validator(mode="after")
    def _tool_names_unique(self) -> Domain:
        duplicates = _duplicates(tool.name for tool in self.tools)
        if duplicates:
            raise ValueError(f"duplicate tool names: {duplicates}")
        return self


class Catalog(BaseModel):
    """A set of domains with unique names."""

    model_config = ConfigDict(extra="forbid")

    domains: list[Domain]

    @model_validator(mode="after")
    def _domain_names_unique(self) -> Catalog:
        duplicates = _duplicates(domain.name for domain in self.domains)
        if duplicates:
            raise ValueError(f"duplicate domain names: {duplicates}")
        return self

    def __len__(self) -> int:
        return len(self.domains)

    def names(self) -> list[str]:
        return [domain.name for domain in self.domains]

    def domain(self, name: str) -> Domain:
        for domain in self.domains:
            if domain.name == name:
                return domain
        raise KeyError(f"no domain {name!r} in the catalog (known: {', '.join(self.names())})")

    def split(self, holdout_fraction: float, seed: int) -> tuple[Catalog, Catalog]:
        """Split the domains into (train, held_out), deterministically for a seed.

        The result depends only on the set of domain names, not their order. With a fraction
        strictly between 0 and 1 and at least two domains, both sides get at least one domain.
        """
        if not 0.0 <= holdout_fraction <= 1.0:
            raise ValueError(f"holdout_fraction must be in [0, 1], got {holdout_fraction}")
        names = sorted(self.names())
        random.Random(seed).shuffle(names)
        count = round(len(names) * holdout_fraction)
        if 0.0 < holdout_fraction < 1.0 and len(names) >= 2:
            count = min(max(count, 1), len(names) - 1)
        held_out = set(names[:count])
        return (
            Catalog(domains=[d for d in self.domains if d.name not in held_out]),
            Catalog(domains=[d for d in self.domains if d.name in held_out]),
        )


def load_catalog(path: Path | None = None) -> Catalog:
    """Load the shipped catalog (`path` None), a catalog file, or a directory of catalog files."""
    sources: Sequence[Path | Traversable]
    if path is None:
        sources = _shipped_sources()
        where = "shipped catalog"
    elif path.is_dir():
        sources = sorted(path.glob("*.json"))
        where = str(path)
    elif path.is_file():
        sources = [path]
        where = str(path)
    else:
        raise CatalogError(f"catalog {path}: no such file or directory")
    if not sources:
        raise CatalogError(f"catalog {where}: no .json files")
    return _assemble(_load_source(source) for source in sources)


def _shipped_sources() -> list[Traversable]:
    folder = resources.files(SHIPPED_PACKAGE).joinpath(SHIPPED_DIR)
    return sorted((entry for entry in folder.iterdir() if entry.name.endswith(".json")), key=_name)


def _name(entry: Traversable) -> str:
    return entry.name


def import_domain(source: Path, name: str | None = None) -> tuple[Domain, list[str]]:
    """One domain from an OpenAPI 3 document, an MCP `tools/list` response or OpenAI function
    schemas, named `name` or after the source; with notes on what the conversion dropped."""
    label = str(source)
    document = _read(source, label)
    notes: list[str] = []
    try:
        raw = imported_domain(document, shape_of(document), source.stem, notes)
    except SourceProblem as problem:
        raise _error(label, str(problem)) from problem
    if name is not None:
        raw["domain"] = name
    domain = _parse_domain(raw, label, 0)
    return domain, notes + _undrawable(domain)


def domain_document(domain: Domain) -> dict[str, Any]:
    """`domain` as a catalog file holds it."""
    tools = []
    for tool in domain.tools:
        dumped = tool.model_dump(mode="json")
        if dumped["returns"] is None:
            del dumped["returns"]
        tools.append(dumped)
    return {"domain": domain.name, "description": domain.description, "tools": tools}


def _undrawable(domain: Domain) -> list[str]:
    """A note for each tool whose example arguments cannot be drawn, as tasks need by default."""
    notes = []
    for tool in domain.tools:
        rng = random.Random(0)
        try:
            # Optional properties are drawn at random: several draws reach most of them.
            for _ in range(_DRAWS_CHECKED):
                example_arguments(tool, rng)
        except ValueError as error:
            notes.append(
                f"{error}; give that schema `examples`, or generate arguments with "
                "--set taskgen.argument_source=simulator"
            )
    return notes


def _load_source(source: Path | Traversable) -> tuple[str, list[Domain]]:
    label = str(source) if isinstance(source, Path) else f"{SHIPPED_DIR}/{source.name}"
    document = _read(source, label)
    shape = shape_of(document)
    if shape == "openapi":
        raise _error(
            label, "an OpenAPI document: turn it into a catalog with `trustee tasks import`"
        )
    if shape != "catalog":
        try:
            document = imported_domain(document, shape, Path(source.name).stem, [])
        except SourceProblem as problem:
            raise _error(label, str(problem)) from problem
    raw_domains = _raw_domains(document, label)
    if not raw_domains:
        raise _error(label, "no domains")
    return label, [_parse_domain(raw, label, index) for index, raw in enumerate(raw_domains)]


def _read(source: Path | Traversable, label: str) -> Any:
    try:
        return read_document(source)
    except SourceProblem as problem:
        raise _error(label, str(problem)) from problem


def _raw_domains(document: Any, label: str) -> list[Any]:
    if isinstance(document, list):
        return document
    if isinstance(document, dict) and "domains" in document:
        if set(document) != {"domains"} or not isinstance(document["domains"], list):
            raise _error(label, 'expected {"domains": [...]} with no other keys')
        return list(document["domains"])
    if isinstance(document, dict):
        return [document]
    shape = type(document).__name__
    raise _error(
        label, f'expected a domain, a list of domains or {{"domains": [...]}}, got {shape}'
    )


def _parse_domain(raw: Any, label: str, index: int) -> Domain:
    if not isinstance(raw, dict):
        raise _error(label, f"domain #{index}: expected an object, got {type(raw).__name__}")
    name = raw.get("domain", raw.get("name"))
    where = f"domain {name!r}" if isinstance(name, str) else f"domain #{index}"
    raw_tools = raw.get("tools")
    if not isinstance(raw_tools, list):
        raise _error(label, f"{where}: 'tools' must be a list of tool objects")
    tools = [_parse_tool(tool, label, where, position) for position, tool in enumerate(raw_tools)]
    try:
        return Domain.model_validate({**raw, "tools": tools})
    except ValidationError as error:
        raise _error(label, f"{where}: {_describe(error)}") from error


def _parse_tool(raw: Any, label: str, where: str, position: int) -> Tool:
    name = raw.get("name") if isinstance(raw, dict) else None
    where = f"{where}, tool {name!r}" if isinstance(name, str) else f"{where}, tool #{position}"
    try:
        tool = Tool.model_validate(_self_contained(raw))
    except SourceProblem as problem:
        raise _error(label, f"{where}: {problem}") from problem
    except ValidationError as error:  # InvalidToolSchema arrives wrapped in a ValidationError
        raise _error(label, f"{where}: {_describe(error)}") from error
    for section, schema in (("parameters", tool.parameters), ("returns", tool.returns)):
        if schema is not None:
            bad_example = _bad_example(schema, section)
            if bad_example:
                raise _error(label, f"{where}: {bad_example}")
    return tool


def _self_contained(raw: Any) -> Any:
    """The raw tool with the local `$ref`s of its schemas inlined, within the size limits."""
    if not isinstance(raw, dict):
        return raw
    resolved = dict(raw)
    for section in ("parameters", "returns"):
        schema = raw.get(section)
        if isinstance(schema, dict):
            try:
                resolved[section] = inline_refs(schema, schema)
            except SourceProblem as problem:
                raise SourceProblem(f"{section}: {problem}") from problem
    return resolved


def _assemble(loaded: Iterator[tuple[str, list[Domain]]]) -> Catalog:
    seen: dict[str, str] = {}
    domains: list[Domain] = []
    for label, file_domains in loaded:
        for domain in file_domains:
            if domain.name in seen:
                also = seen[domain.name]
                raise _error(label, f"duplicate domain {domain.name!r} (also in {also})")
            seen[domain.name] = label
            domains.append(domain)
    return Catalog(domains=domains)


def _bad_example(root: dict[str, Any], section: str) -> str | None:
    """The first `examples` value anywhere in `root` that fails its own subschema, described."""
    # Validating through the root's validator keeps local $refs resolvable from subschemas.
    validator = jsonschema.Draft202012Validator(root, format_checker=jsonschema.FormatChecker())
    for path, subschema in _subschemas(root, section):
        examples = subschema.get("examples")
        if examples is None:
            continue
        if not isinstance(examples, list):
            return f"{path}: examples must be a list"
        for example in examples:
            error = best_match(validator.evolve(schema=subschema).iter_errors(example))
            if error is not None:
                return f"{path}: example {json.dumps(example)} is invalid: {error.message}"
    return None


def _subschemas(schema: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if not isinstance(schema, dict):
        return
    yield path, schema
    for keyword in SCHEMA_KEYWORDS:
        yield from _subschemas(schema.get(keyword), f"{path}.{keyword}")
    for keyword in SCHEMA_LIST_KEYWORDS:
        for index, inner in enumerate(schema.get(keyword) or []):
            yield from _subschemas(inner, f"{path}.{keyword}[{index}]")
    for keyword in SCHEMA_MAP_KEYWORDS:
        children = schema.get(keyword)
        if isinstance(children, dict):
            for name, inner in children.items():
                yield from _subschemas(inner, f"{path}.{keyword}.{name}")


def _describe(error: ValidationError) -> str:
    parts = []
    for detail in error.errors():
        message = str(detail["msg"]).removeprefix("Value error, ")
        location = ".".join(str(part) for part in detail["loc"])
        # Tool's own schema errors already start with the field they are about.
        prefixed = not location or message.startswith(f"{location}:")
        parts.append(message if prefixed else f"{location}: {message}")
    return "; ".join(parts)


def _error(label: str, message: str) -> CatalogError:
    return CatalogError(" ".join(f"catalog {label}: {message}".split()))


def _duplicates(names: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    duplicates: list[str] = []
    for name in names:
        if name in seen and name not in duplicates:
            duplicates.append(name)
        seen.add(name)
    return duplicates


# ------------------------------------------------------------------------ example arguments

_DEFAULT_SPAN = 100.0


def example_arguments(tool: Tool, rng: random.Random) -> dict[str, Any]:
    """A schema-valid arguments object for `tool`, drawn from examples, enums and bounds.

    Every required property is filled, each optional one with probability 0.5; arrays get one or
    two items. Raises ValueError if the schema needs a value this cannot invent (e.g. a string
    `pattern` without `examples`).
    """
    arguments = _draw(tool.parameters, rng)
    error = best_match(jsonschema.Draft202012Validator(tool.parameters).iter_errors(arguments))
    if error is not None or not isinstance(arguments, dict):
        reason = error.message if error is not None else "not an object"
        raise ValueError(f"tool {tool.name!r}: cannot draw valid example arguments: {reason}")
    return arguments


def _draw(schema: dict[str, Any], rng: random.Random) -> Any:
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return rng.choice(schema["enum"])
    if schema.get("examples"):
        return rng.choice(schema["examples"])
    for keyword in ("anyOf", "oneOf"):
        if schema.get(keyword):
            return _draw(rng.choice(schema[keyword]), rng)
    kind = _type_of(schema)
    if kind == "object":
        return _draw_object(schema, rng)
    if kind == "array":
        return _draw_array(schema, rng)
    if kind == "integer":
        return _draw_integer(schema, rng)
    if kind == "number":
        return _draw_number(schema, rng)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "string":
        return _draw_string(schema, rng)
    return None


def _type_of(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        non_null = [name for name in kind if name != "null"]
        return str(non_null[0]) if non_null else "null"
    if kind is None and "properties" in schema:
        return "object"
    return kind if isinstance(kind, str) else None


def _draw_object(schema: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    required = set(schema.get("required", []))
    result: dict[str, Any] = {}
    for name, inner in schema.get("properties", {}).items():
        if name in required or rng.random() < 0.5:
            result[name] = _draw(inner, rng)
    return result


def _draw_array(schema: dict[str, Any], rng: random.Random) -> list[Any]:
    if schema.get("maxItems") == 0:
        return []
    low = max(1, int(schema.get("minItems", 0)))
    high = max(low, min(2, int(schema.get("maxItems", 2))))
    items = schema.get("items")
    if not isinstance(items, dict):
        items = {}
    count = rng.randint(low, high)
    drawn: list[Any] = []
    # Prefer distinct items (a list naming the same seat twice reads wrong); retry a few times
    # since they are drawn from only a handful of examples.
    for _ in range(count * 8):
        if len(drawn) == count:
            break
        value = _draw(items, rng)
        if value not in drawn:
            drawn.append(value)
    while len(drawn) < count and not schema.get("uniqueItems"):
        drawn.append(_draw(items, rng))
    return drawn


def _draw_integer(schema: dict[str, Any], rng: random.Random) -> int:
    low, high = _bounds(schema, integer=True)
    return rng.randint(int(low), int(high))


def _draw_number(schema: dict[str, Any], rng: random.Random) -> float:
    low, high = _bounds(schema, integer=False)
    value = round(rng.uniform(low, high), 2)
    return min(max(value, low), high)


def _bounds(schema: dict[str, Any], *, integer: bool) -> tuple[float, float]:
    step = 1 if integer else 0.01
    if "minimum" in schema:
        low = float(schema["minimum"])
    elif "exclusiveMinimum" in schema:
        low = float(schema["exclusiveMinimum"]) + step
    else:
        low = 0.0
    if "maximum" in schema:
        high = float(schema["maximum"])
    elif "exclusiveMaximum" in schema:
        high = float(schema["exclusiveMaximum"]) - step
    else:
        high = low + _DEFAULT_SPAN
    if integer:
        low, high = float(math.ceil(low)), float(math.floor(high))
    return low, max(low, high)


def _draw_string(schema: dict[str, Any], rng: random.Random) -> str:
    length = max(int(schema.get("minLength", 1)), 1)
    length = min(length, int(schema.get("maxLength", length)))
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(length))
