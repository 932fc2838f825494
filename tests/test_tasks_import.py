"""`trustee tasks import` from OpenAPI 3, MCP and OpenAI sources; `--catalog` reading MCP and OpenAI
shapes directly; bad catalog input refused in one line; imported catalogs simulated end to end."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from trustee_rl.cli import app
from trustee_rl.schema import Tool
from trustee_rl.sim.catalog import Catalog, load_catalog
from trustee_rl.sim.catalog.importers import MAX_FILE_BYTES
from trustee_rl.sim.catalog.schemas import MAX_SCHEMA_DEPTH, MAX_SCHEMA_VALUES, OPEN_RESULT
from trustee_rl.store import RunStore
from trustee_rl.testing.openai_server import AgentResponder, LoopbackOpenAIServer

SOURCES = Path(__file__).parent / "fixtures" / "catalog_sources"
CLINIC = SOURCES / "clinic_openapi.yaml"
LIBRARY = SOURCES / "library_openapi.json"
NOTES_MCP = SOURCES / "notes_mcp_tools_list.json"
WEATHER_JSONL = SOURCES / "weather_functions.jsonl"
# An address nothing listens on: a catalog error must come before any backend is reached.
NOWHERE = "http://127.0.0.1:9/v1"

runner = CliRunner()


def import_source(source: Path, out: Path, *extra: str) -> Any:
    return runner.invoke(app, ["tasks", "import", str(source), "--out", str(out), *extra])


def imported(source: Path, tmp_path: Path, *extra: str) -> tuple[Catalog, str]:
    """The catalog `tasks import` wrote for `source`, read back as `--catalog` reads it, and the
    command's stderr."""
    out = tmp_path / f"{source.stem}.catalog.json"
    result = import_source(source, out, *extra)
    assert result.exit_code == 0, result.output
    return load_catalog(out), result.stderr


def tools_by_name(catalog: Catalog) -> dict[str, Tool]:
    (domain,) = catalog.domains
    return {tool.name: tool for tool in domain.tools}


def refs_in(value: Any) -> list[str]:
    if isinstance(value, dict):
        return ([str(value["$ref"])] if "$ref" in value else []) + refs_in(list(value.values()))
    if isinstance(value, list):
        return [ref for item in value for ref in refs_in(item)]
    return []


# ------------------------------------------------------------------------------------ OpenAPI


def test_openapi_yaml_becomes_one_tool_per_operation(tmp_path: Path) -> None:
    catalog, stderr = imported(CLINIC, tmp_path)
    assert catalog.names() == ["riverside_clinic_appointments"]
    assert catalog.domains[0].description.startswith("Book, move and cancel appointments")
    tools = tools_by_name(catalog)
    assert list(tools) == [
        "listClinicians",
        "listOpenSlots",
        "get_appointments",  # no operationId: named from method and path
        "bookAppointment",
        "cancelAppointment",
        "rescheduleAppointment",
        "getPatient",
        "updatePatientContact",
    ]
    assert refs_in([tool.model_dump() for tool in tools.values()]) == []

    slots = tools["listOpenSlots"]
    assert (
        slots.description == "List open slots. Open appointment slots of one clinician on one day."
    )
    # The path-level parameter comes from components; the header is transport, not an argument.
    assert list(slots.parameters["properties"]) == ["clinician_id", "date", "duration_minutes"]
    assert slots.parameters["required"] == ["clinician_id", "date"]
    assert slots.parameters["properties"]["clinician_id"]["examples"] == ["CL-017"]
    # An unquoted YAML date stays the string a `format: date` schema expects.
    assert slots.parameters["properties"]["date"]["examples"] == ["2025-03-14"]
    assert slots.parameters["properties"]["duration_minutes"]["enum"] == [15, 30, 45, 60]
    assert slots.returns is not None and slots.returns["type"] == "array"
    assert slots.returns["items"]["properties"]["minutes"] == {
        "type": "integer",
        "minimum": 5,
        "maximum": 120,
    }  # OpenAPI 3.0's boolean exclusiveMinimum: false is gone

    book = tools["bookAppointment"]  # a requestBody from components, flattened beside parameters
    assert book.parameters["required"] == ["patient_id", "slot_id", "visit_type"]
    assert book.parameters["properties"]["patient_id"]["pattern"] == "^P[0-9]{7}$"
    assert book.parameters["additionalProperties"] is False

    appointment = tools["rescheduleAppointment"].returns
    assert appointment is not None
    cancelled_at = appointment["properties"]["cancelled_at"]
    assert cancelled_at["type"] == ["string", "null"] and "nullable" not in cancelled_at
    assert tools["cancelAppointment"].returns == OPEN_RESULT  # 204: nothing declared

    # What the server sets (readOnly) is no argument, though the shared schema requires it.
    contact = tools["updatePatientContact"]
    assert contact.parameters["required"] == ["patient_id", "email"]
    assert "updated_at" not in contact.parameters["properties"]
    assert contact.returns is not None and "updated_at" in contact.returns["required"]

    patient = tools["getPatient"].returns
    assert patient is not None
    assert patient["properties"]["insurance"]["type"] == ["object", "null"]
    assert "examples" not in patient["properties"]["email"]
    assert 'dropped example "not-an-email"' in stderr and "GET /patients/{patient_id}" in stderr


def test_openapi_31_json_merges_all_of_and_nests_other_bodies(tmp_path: Path) -> None:
    catalog, stderr = imported(LIBRARY, tmp_path)
    assert stderr == ""
    tools = tools_by_name(catalog)
    assert set(tools) == {
        "search_catalogue",
        "list_loans",
        "borrow_item",
        "renew_loan",
        "pay_fines",
        "place_hold",
    }
    borrow = tools["borrow_item"].parameters  # an allOf of objects: one object, flattened
    assert borrow["required"] == ["card_number", "item_id"]
    assert list(borrow["properties"]) == ["card_number", "item_id", "loan_days"]
    card = borrow["properties"]["card_number"]
    assert card["description"] == "The member's library card number."
    assert card["examples"] == ["2900018844", "2900021307"]
    pay = tools["pay_fines"].parameters  # a oneOf body cannot sit beside parameters
    assert pay["required"] == ["card_number", "body"]
    assert [part["required"][0] for part in pay["properties"]["body"]["oneOf"]] == ["method"] * 2
    hold = tools["place_hold"].parameters["properties"]
    assert hold["card_number"]["description"] == "Who the hold is for."  # beside the $ref, wins
    assert hold["notify_by"]["type"] == ["string", "null"]
    assert tools["list_loans"].description == "List a member's loans"


def test_domain_option_names_the_domain_and_an_existing_out_needs_force(tmp_path: Path) -> None:
    out = tmp_path / "catalog.json"
    out.write_text("keep me")
    refused = import_source(LIBRARY, out, "--domain", "library")
    assert refused.exit_code == 2 and "--force" in refused.stderr
    assert out.read_text() == "keep me"
    assert import_source(LIBRARY, out, "--domain", "library", "--force").exit_code == 0
    assert load_catalog(out).names() == ["library"]
    bad_name = import_source(LIBRARY, tmp_path / "other.json", "--domain", "Public Library")
    assert bad_name.exit_code == 2 and "'Public Library'" in bad_name.stderr
    assert not (tmp_path / "other.json").exists()


# ------------------------------------------------------------------------------- MCP and OpenAI


def test_mcp_tools_list_keeps_output_schemas_and_reads_annotations(tmp_path: Path) -> None:
    catalog, _ = imported(NOTES_MCP, tmp_path, "--domain", "notes")
    tools = tools_by_name(catalog)
    search = tools["search_notes"]
    assert search.description == (
        "Full-text search over the user's notes, newest first. It only reads; it changes nothing."
    )
    assert search.parameters["properties"]["folder"]["enum"] == [
        "inbox",
        "work",
        "personal",
        "archive",
    ]
    assert "$defs" not in search.parameters
    assert search.returns is not None
    assert search.returns["properties"]["notes"]["items"]["required"] == ["id", "title"]
    assert refs_in(search.returns) == []
    assert tools["create_note"].description == "Create a note in a folder."
    assert tools["delete_note"].description == (
        "Delete a note permanently. It may delete or overwrite data. "
        "Repeating a call with the same arguments has no further effect."
    )
    assert tools["set_reminder"].description == "Remind me"  # no description: its title
    assert tools["create_note"].returns == OPEN_RESULT


def test_openai_function_jsonl_takes_wrapped_and_bare_functions(tmp_path: Path) -> None:
    catalog, _ = imported(WEATHER_JSONL, tmp_path)
    assert catalog.names() == ["weather_functions"]
    tools = tools_by_name(catalog)
    assert list(tools) == [
        "get_current_weather",
        "get_forecast",
        "get_air_quality",
        "list_weather_alerts",
    ]
    assert tools["get_forecast"].parameters["required"] == ["location", "days"]
    assert all(tool.returns == OPEN_RESULT for tool in tools.values())


def test_import_notes_tools_whose_task_arguments_cannot_be_drawn(tmp_path: Path) -> None:
    code = {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"}
    function = {
        "name": "lookup_code",
        "description": "Look up a tariff code.",
        "parameters": {"type": "object", "properties": {"code": code}, "required": ["code"]},
    }
    source = tmp_path / "codes.jsonl"
    source.write_text(json.dumps(function) + "\n")
    result = import_source(source, tmp_path / "codes.json")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"imported 1 tool into domain 'codes': {tmp_path / 'codes.json'}\n"
    assert result.stderr.startswith(
        "note: tool 'lookup_code': cannot draw valid example arguments: "
    )
    assert "give that schema `examples`" in result.stderr
    assert (
        tools_by_name(load_catalog(tmp_path / "codes.json"))["lookup_code"].parameters
        == (function["parameters"])
    )


def test_catalog_option_reads_mcp_and_openai_shapes_as_import_writes_them(tmp_path: Path) -> None:
    for source in (NOTES_MCP, WEATHER_JSONL):
        direct = load_catalog(source)
        assert direct.names() == [source.stem]  # named after the file
        assert direct == imported(source, tmp_path)[0]
    folder = tmp_path / "shapes"
    folder.mkdir()
    listed = folder / "functions.json"
    lines = WEATHER_JSONL.read_text().splitlines()
    listed.write_text(json.dumps([json.loads(line) for line in lines if line.strip()]))
    assert tools_by_name(load_catalog(listed)) == tools_by_name(load_catalog(WEATHER_JSONL))
    wrapped = folder / "request_tools.json"
    wrapped.write_text(json.dumps({"tools": json.loads(listed.read_text())[:2]}))
    assert list(tools_by_name(load_catalog(wrapped))) == ["get_current_weather", "get_forecast"]
    assert load_catalog(folder).names() == ["functions", "request_tools"]  # a directory too


# ---------------------------------------------------------------------------- bad catalog input


def mcp_response(*tools: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "result": {"tools": list(tools)}}


def mcp_tool(name: str, input_schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "description": f"{name} things.", "inputSchema": input_schema}


def nested_items(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return {"type": "object", "properties": {"deep": schema}}


def reference_bomb(levels: int) -> dict[str, Any]:
    """Each definition refers to the next twice: 2**levels copies once inlined."""
    definitions: dict[str, Any] = {
        f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}] * 2} for i in range(levels)
    }
    definitions[f"d{levels}"] = {"type": "string"}
    return {"type": "object", "properties": {"x": {"$ref": "#/$defs/d0"}}, "$defs": definitions}


def write_json(value: Any) -> Callable[[Path], object]:
    return lambda path: path.write_text(json.dumps(value))


def write_bytes(data: bytes) -> Callable[[Path], object]:
    return lambda path: path.write_bytes(data)


def write_sparse(size: int) -> Callable[[Path], object]:
    def write(path: Path) -> None:
        with path.open("wb") as handle:
            handle.truncate(size)

    return write


RECURSIVE_NODE = {
    "type": "object",
    "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
}
BAD_SOURCES: dict[str, tuple[Callable[[Path], object], str]] = {
    "invalid_json_schema": (
        write_json(
            mcp_response(
                mcp_tool(
                    "transfer", {"type": "object", "properties": {"amount": {"type": "strin"}}}
                )
            )
        ),
        "tool 'transfer': parameters: 'strin' is not valid under any of the given schemas",
    ),
    "recursive_ref": (
        write_json(
            mcp_response(
                mcp_tool(
                    "tree",
                    {
                        "type": "object",
                        "properties": {"root": {"$ref": "#/$defs/node"}},
                        "$defs": {"node": RECURSIVE_NODE},
                    },
                )
            )
        ),
        "tool 'tree': parameters: recursive $ref '#/$defs/node' (#/$defs/node -> #/$defs/node)",
    ),
    "self_ref": (
        write_json(mcp_response(mcp_tool("loop", {"$ref": "#"}))),
        "tool 'loop': parameters: recursive $ref '#' (# -> #)",
    ),
    "reference_bomb": (
        write_json(mcp_response(mcp_tool("bomb", reference_bomb(14)))),
        f"parameters: schema too large: over the limit of {MAX_SCHEMA_VALUES} JSON values",
    ),
    "huge_schema": (
        write_json(
            mcp_response(
                mcp_tool(
                    "wide",
                    {
                        "type": "object",
                        "properties": {f"p{i}": {"type": "string"} for i in range(3000)},
                    },
                )
            )
        ),
        f"tool 'wide': parameters: schema too large: over the limit of {MAX_SCHEMA_VALUES} JSON",
    ),
    "deep_schema": (
        write_json(mcp_response(mcp_tool("deep", nested_items(MAX_SCHEMA_DEPTH)))),
        f"tool 'deep': parameters: schema nested too deep: over the limit of {MAX_SCHEMA_DEPTH}",
    ),
    "deep_json": (write_bytes(b"[" * 100_000 + b"]" * 100_000), "nested too deep to read"),
    "huge_file": (
        write_sparse(MAX_FILE_BYTES + 1),
        f"file too large: {MAX_FILE_BYTES + 1} bytes, over the limit of 32 MiB",
    ),
    "not_utf8": (
        write_bytes('{"domain": "café"}'.encode("latin-1")),
        "not UTF-8 text: byte 0xe9 at offset 15",
    ),
    "empty": (write_bytes(b""), "empty file"),
    "blank": (write_bytes(b"\xef\xbb\xbf \n\t\n"), "empty file"),  # a byte-order mark and space
    "duplicate_tool_names": (
        write_json(mcp_response(*[mcp_tool("transfer", {"type": "object"})] * 2)),
        "duplicate tool names: ['transfer']",
    ),
    "invalid_jsonl": (
        write_bytes(b'{"name": "a", "parameters": {"type": "object"}}\n{"name": \n'),
        "invalid JSON Lines: line 2 column 10: Expecting value",
    ),
}


@pytest.fixture(params=sorted(BAD_SOURCES))
def bad_source(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    write, expected = BAD_SOURCES[request.param]
    path = tmp_path / f"{request.param}.json"
    write(path)
    yield path, expected


def one_line_error(result: Any, source: Path, expected: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: catalog {source}: "), lines[0]
    assert expected in lines[0]
    return str(lines[0])


def test_bad_source_is_one_line_error_from_tasks_import(
    bad_source: tuple[Path, str], tmp_path: Path
) -> None:
    source, expected = bad_source
    started = time.monotonic()
    result = import_source(source, tmp_path / "out.json")
    assert time.monotonic() - started < 10  # neither a cycle nor a bomb may hang
    one_line_error(result, source, expected)
    assert not (tmp_path / "out.json").exists()


def test_bad_source_is_one_line_error_from_simulate(
    bad_source: tuple[Path, str], tmp_path: Path
) -> None:
    source, expected = bad_source
    run_dir = tmp_path / "run"
    args = ["simulate", "--run-dir", str(run_dir), "--catalog", str(source)]
    result = runner.invoke(app, [*args, "--policy", NOWHERE, "--simulator", NOWHERE])
    one_line_error(result, source.resolve(), expected)
    assert not run_dir.exists()


def test_bad_input_only_import_reads(tmp_path: Path) -> None:
    """OpenAPI documents and unrecognised files; `--catalog` sends OpenAPI to `tasks import`."""
    tree = {
        "openapi": "3.0.3",
        "info": {"title": "Tree", "version": "1"},
        "paths": {
            "/nodes": {
                "post": {
                    "requestBody": {
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Node"}}
                        }
                    },
                    "responses": {"204": {"description": "ok"}},
                }
            }
        },
        "components": {
            "schemas": {
                "Node": {
                    "type": "object",
                    "properties": {
                        "kids": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}}
                    },
                }
            }
        },
    }
    cases = {
        "recursive.json": (
            tree,
            "operation POST /nodes: request body: recursive $ref '#/components/schemas/Node'",
        ),
        "external.json": (
            {**tree, "components": {"schemas": {"Node": {"$ref": "shared.yaml#/Node"}}}},
            "$ref 'shared.yaml#/Node' points outside the document",
        ),
        "swagger.json": ({"swagger": "2.0", "paths": {}}, "OpenAPI version '2.0' is not supported"),
        "no_paths.json": ({"openapi": "3.1.0", "paths": {}}, "has no paths"),
    }
    for name, (document, expected) in cases.items():
        source = tmp_path / name
        source.write_text(json.dumps(document))
        one_line_error(import_source(source, tmp_path / "out.json"), source, expected)
    source = tmp_path / "api.yaml"
    source.write_text("openapi: 3.0.0\npaths:\n  /a: [unclosed\n")
    expected = "invalid YAML: line 4 column 1: expected ',' or ']'"
    one_line_error(import_source(source, tmp_path / "out.json"), source, expected)
    source = tmp_path / "notes.txt"
    source.write_text("just some notes")
    expected = "not an OpenAPI 3 document, an MCP tools/list response or OpenAI function schemas"
    one_line_error(import_source(source, tmp_path / "out.json"), source, expected)
    run = ["simulate", "--run-dir", str(tmp_path / "run"), "--catalog", str(CLINIC)]
    result = runner.invoke(app, [*run, "--policy", NOWHERE, "--simulator", NOWHERE])
    one_line_error(result, CLINIC, "an OpenAPI document: turn it into a catalog with")


# --------------------------------------------------------------------------------- end to end


@pytest.mark.parametrize(
    "source", [CLINIC, LIBRARY, NOTES_MCP, WEATHER_JSONL], ids=lambda p: p.stem
)
def test_imported_catalog_is_simulated_and_scored(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "imported.json"
    assert import_source(source, out).exit_code == 0
    tool_names = set(tools_by_name(load_catalog(out)))
    run_dir = tmp_path / "run"
    with LoopbackOpenAIServer(AgentResponder(seed=0)) as server:
        args = ["simulate", "--run-dir", str(run_dir), "--catalog", str(out), "--episodes", "2"]
        args += ["--policy", server.base_url, "--simulator", server.base_url, "--json"]
        result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["episodes"] == 2 and summary["scored"] == 2, summary
    with RunStore.open(run_dir) as store:
        episodes = store.episodes()
        assert len(episodes) == 2
        for episode in episodes:
            verdict = store.verdict(episode.id)
            assert verdict is not None and verdict.scored and verdict.reward is not None
            task = store.task(episode.task_id)
            assert task.domain == load_catalog(out).names()[0]
            assert task.tools and {tool.name for tool in task.tools} <= tool_names
            assert {call.name for call in task.expected_calls} <= tool_names
        assert {call.name for e in episodes for call in e.tool_calls} & tool_names
