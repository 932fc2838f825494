"""OpenAPI 3 documents as catalog tools: one tool per operation.

An operation's path and query parameters and its JSON request body become one arguments object
(an object body's properties sit beside the parameters; any other body sits under `body`); its
first 2xx JSON response becomes what the tool returns. `$ref`s into the document, components
included, are inlined. OpenAPI 3.0 schema dialect is rewritten as JSON Schema 2020-12: `nullable`
as a `null` type, `example` as `examples`, boolean `exclusiveMinimum`/`exclusiveMaximum` as bounds.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match

from trustee_rl.sim.catalog.schemas import (
    OPEN_RESULT,
    SCHEMA_KEYWORDS,
    SCHEMA_LIST_KEYWORDS,
    SCHEMA_MAP_KEYWORDS,
    SourceProblem,
    follow_refs,
    inline_refs,
)

__all__ = ["openapi_tools"]

_METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")
# Headers and cookies carry transport details (auth, tracing), not what a caller asks for.
_ARGUMENT_LOCATIONS = ("path", "query")
# Schema keywords OpenAPI adds that JSON Schema lacks or that only document the wire format.
_OPENAPI_ONLY = ("nullable", "example", "discriminator", "xml", "externalDocs")
# An object schema with only these keywords can be merged with others: its properties can sit
# beside an operation's parameters, or with the other parts of an `allOf`.
_PLAIN_OBJECT_KEYWORDS = {"type", "properties", "required", "title", "description", "examples"}
_MAX_NAME = 64


def openapi_tools(document: dict[str, Any], notes: list[str]) -> list[dict[str, Any]]:
    """One raw tool per operation, by path and then method; `notes` gets each example that was
    dropped because it does not validate against its own schema."""
    version = str(document.get("openapi", document.get("swagger", "")))
    if not version.startswith("3."):
        raise SourceProblem(f"OpenAPI version {version!r} is not supported; expected 3.x")
    paths = document.get("paths")
    if not isinstance(paths, dict) or not paths:
        raise SourceProblem("the OpenAPI document has no paths, so no operations to import")
    tools: list[dict[str, Any]] = []
    for path, raw_item in paths.items():
        item = _resolved(raw_item, document, f"path {path}")
        shared = _listed(item.get("parameters"), f"path {path}: parameters")
        for method in _METHODS:
            operation = item.get(method)
            if isinstance(operation, dict):
                tools.append(_Operation(document, method, str(path), notes).tool(shared, operation))
    if not tools:
        raise SourceProblem("the OpenAPI document has no operations to import")
    return tools


class _Operation:
    def __init__(self, document: dict[str, Any], method: str, path: str, notes: list[str]) -> None:
        self.document = document
        self.method = method
        self.path = path
        self.where = f"operation {method.upper()} {path}"
        self.notes = notes

    def tool(self, shared: list[Any], operation: dict[str, Any]) -> dict[str, Any]:
        own = _listed(operation.get("parameters"), f"{self.where}: parameters")
        parameters = self._parameters(shared + own)
        self._add_body(parameters, operation.get("requestBody"))
        return {
            "name": self._name(operation.get("operationId")),
            "description": self._description(operation),
            "parameters": parameters,
            "returns": self._returns(operation.get("responses")),
        }

    def _name(self, operation_id: Any) -> str:
        if isinstance(operation_id, str) and operation_id.strip():
            name = re.sub(r"[^A-Za-z0-9_.\-]+", "_", operation_id.strip())
        else:
            name = re.sub(r"[^A-Za-z0-9]+", "_", f"{self.method}_{self.path}").strip("_")
        if not re.match(r"[A-Za-z_]", name):
            name = f"op_{name}"
        return name[:_MAX_NAME]

    def _description(self, operation: dict[str, Any]) -> str:
        summary = _words(operation.get("summary"))
        details = _words(operation.get("description"))
        if summary and details and not details.startswith(summary.rstrip(".")):
            return f"{summary.rstrip('.')}. {details}"
        return details or summary or f"{self.method.upper()} {self.path}"

    def _parameters(self, raw_parameters: list[Any]) -> dict[str, Any]:
        # An operation's parameter replaces a path-level one of the same name and location.
        chosen: dict[tuple[str, str], dict[str, Any]] = {}
        for raw in raw_parameters:
            parameter = _resolved(raw, self.document, self.where)
            name, location = parameter.get("name"), parameter.get("in")
            if not isinstance(name, str) or not isinstance(location, str):
                raise SourceProblem(f"{self.where}: a parameter needs a 'name' and an 'in'")
            chosen[(name, location)] = parameter
        properties: dict[str, Any] = {}
        required: list[str] = []
        for (name, location), parameter in chosen.items():
            if location not in _ARGUMENT_LOCATIONS:
                continue
            if name in properties:
                raise SourceProblem(f"{self.where}: parameter {name!r} is both in path and query")
            properties[name] = self._parameter_schema(name, parameter)
            if location == "path" or parameter.get("required") is True:
                required.append(name)
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        schema["additionalProperties"] = False
        return schema

    def _parameter_schema(self, name: str, parameter: dict[str, Any]) -> dict[str, Any]:
        raw = parameter.get("schema")
        if raw is None:
            raw = _media_schema(parameter.get("content"))
        schema = self._schema(raw if raw is not None else {"type": "string"}, f"parameter {name}")
        description = _words(parameter.get("description"))
        if description:
            schema = {**schema, "description": description}
        examples = self._parameter_examples(parameter)
        if examples and "examples" not in schema:
            schema = self._kept_examples({**schema, "examples": examples}, f"parameter {name}")
        return schema

    def _add_body(self, parameters: dict[str, Any], raw_body: Any) -> None:
        if raw_body is None:
            return
        body = _resolved(raw_body, self.document, self.where)
        raw_schema = _media_schema(body.get("content"))
        if raw_schema is None:
            return
        schema = _writable(self._schema(raw_schema, "request body"))
        properties = parameters["properties"]
        required: list[str] = parameters.setdefault("required", [])
        body_properties = schema.get("properties")
        if (
            _plain_object(schema)
            and isinstance(body_properties, dict)
            and not (set(body_properties) & set(properties))
        ):
            properties.update(body_properties)
            if body.get("required") is True:
                required.extend(schema.get("required", []))
        else:
            properties["body"] = schema
            if body.get("required") is True:
                required.append("body")
        if not required:
            del parameters["required"]

    def _returns(self, responses: Any) -> dict[str, Any]:
        if not isinstance(responses, dict):
            return OPEN_RESULT
        # YAML reads an unquoted status code as an integer.
        for key in sorted(responses, key=str):
            code = str(key)
            if not code.startswith("2"):
                continue
            response = _resolved(responses[key], self.document, self.where)
            schema = _media_schema(response.get("content"))
            if schema is not None:
                return self._schema(schema, f"response {code}")
        return OPEN_RESULT

    def _schema(self, raw: Any, part: str) -> dict[str, Any]:
        try:
            schema = self._converted(inline_refs(raw, self.document), part)
        except SourceProblem as problem:
            raise SourceProblem(f"{self.where}: {part}: {problem}") from problem
        if not isinstance(schema, dict):
            raise SourceProblem(f"{self.where}: {part}: a schema must be an object")
        return schema

    def _converted(self, schema: Any, part: str) -> Any:
        """An OpenAPI schema (3.0 or 3.1) as JSON Schema 2020-12, children first."""
        if not isinstance(schema, dict):
            return schema
        converted = {
            key: value
            for key, value in schema.items()
            if key not in _OPENAPI_ONLY and not key.startswith("x-")
        }
        for keyword in SCHEMA_KEYWORDS:
            if keyword in converted:
                converted[keyword] = self._converted(converted[keyword], part)
        for keyword in SCHEMA_LIST_KEYWORDS:
            if isinstance(converted.get(keyword), list):
                converted[keyword] = [self._converted(one, part) for one in converted[keyword]]
        for keyword in SCHEMA_MAP_KEYWORDS:
            if isinstance(converted.get(keyword), dict):
                children = converted[keyword].items()
                converted[keyword] = {name: self._converted(one, part) for name, one in children}
        if "example" in schema and "examples" not in converted:
            converted["examples"] = [schema["example"]]
        if isinstance(converted.get("allOf"), list):
            converted = _merged_all_of(converted)
        if schema.get("nullable") is True:
            _allow_null(converted)
        for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
            flag = converted.get(exclusive)
            if isinstance(flag, bool):
                del converted[exclusive]
                if flag and bound in converted:
                    converted[exclusive] = converted.pop(bound)
        return self._kept_examples(converted, part)

    def _kept_examples(self, schema: dict[str, Any], part: str) -> dict[str, Any]:
        """`schema` without those of its examples that fail it, each dropped one noted: sources
        often carry sloppy examples, and a catalog only keeps examples that validate."""
        examples = schema.get("examples")
        if not isinstance(examples, list):
            return schema
        validator = jsonschema.Draft202012Validator(
            {key: value for key, value in schema.items() if key != "examples"},
            format_checker=jsonschema.FormatChecker(),
        )
        kept = []
        for example in examples:
            error = best_match(validator.iter_errors(example))
            if error is None:
                kept.append(example)
            else:
                shown = json.dumps(example)[:60]
                self.notes.append(f"{self.where}: {part}: dropped example {shown}: {error.message}")
        if kept:
            return {**schema, "examples": kept}
        return {key: value for key, value in schema.items() if key != "examples"}

    def _parameter_examples(self, parameter: dict[str, Any]) -> list[Any]:
        if "example" in parameter:
            return [parameter["example"]]
        named = parameter.get("examples")
        if not isinstance(named, dict):
            return []
        found = (_resolved(one, self.document, self.where) for one in named.values())
        return [example["value"] for example in found if "value" in example]


def _resolved(raw: Any, document: dict[str, Any], where: str) -> dict[str, Any]:
    try:
        resolved = follow_refs(raw, document)
    except SourceProblem as problem:
        raise SourceProblem(f"{where}: {problem}") from problem
    if not isinstance(resolved, dict):
        raise SourceProblem(f"{where}: expected an object, got {type(resolved).__name__}")
    return resolved


def _listed(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SourceProblem(f"{where}: expected a list, got {type(value).__name__}")
    return value


def _writable(schema: dict[str, Any]) -> dict[str, Any]:
    """A request body without its read-only properties (ids, timestamps the server sets), which
    a schema shared between request and response marks `readOnly`."""
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return schema
    read_only = {
        name
        for name, one in properties.items()
        if isinstance(one, dict) and one.get("readOnly") is True
    }
    if not read_only:
        return schema
    writable = {**schema, "properties": {k: v for k, v in properties.items() if k not in read_only}}
    if isinstance(schema.get("required"), list):
        writable["required"] = [name for name in schema["required"] if name not in read_only]
    return writable


def _media_schema(content: Any) -> Any:
    """The schema of the JSON media type of `content`, else of its first media type."""
    if not isinstance(content, dict) or not content:
        return None
    json_types = [kind for kind in content if kind.split(";")[0].strip().endswith("json")]
    media = content[json_types[0] if json_types else next(iter(content))]
    return media.get("schema") if isinstance(media, dict) else None


def _plain_object(schema: dict[str, Any]) -> bool:
    return (
        schema.get("type", "object") == "object"
        and isinstance(schema.get("properties", {}), dict)
        and set(schema) - {"additionalProperties"} <= _PLAIN_OBJECT_KEYWORDS
        and isinstance(schema.get("additionalProperties", True), bool)
    )


def _merged_all_of(schema: dict[str, Any]) -> dict[str, Any]:
    """An `allOf` of plain objects (OpenAPI's way to extend a schema) as one object, which
    arguments can be drawn from and a body's properties taken from; any other `allOf` stays."""
    parts = schema["allOf"]
    if not all(isinstance(part, dict) and _plain_object(part) for part in parts):
        return schema
    merged = {key: value for key, value in schema.items() if key != "allOf"}
    properties = dict(merged.get("properties", {}))
    required = list(merged.get("required", []))
    for part in parts:
        properties.update(part.get("properties", {}))
        required += [name for name in part.get("required", []) if name not in required]
        for key in ("title", "description"):
            if key in part:
                merged.setdefault(key, part[key])
    merged.update(type="object", properties=properties)
    if required:
        merged["required"] = required
    return merged


def _allow_null(schema: dict[str, Any]) -> None:
    kind = schema.get("type")
    if isinstance(kind, str):
        schema["type"] = [kind, "null"]
    if isinstance(schema.get("enum"), list) and None not in schema["enum"]:
        schema["enum"] = [*schema["enum"], None]


def _words(text: Any) -> str:
    return " ".join(text.split()) if isinstance(text, str) else ""
