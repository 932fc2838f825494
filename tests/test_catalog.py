from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from trustee_rl.schema import Tool
from trustee_rl.sim.catalog import Catalog, CatalogError, Domain, example_arguments, load_catalog

SEEDS = range(6)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def all_tools(catalog: Catalog) -> Iterator[tuple[str, Tool]]:
    for domain in catalog.domains:
        for tool in domain.tools:
            yield domain.name, tool


def nodes(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every (sub)schema of a catalog schema: object properties and array items, recursively."""
    yield path, schema
    for name, inner in schema.get("properties", {}).items():
        yield from nodes(inner, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from nodes(schema["items"], f"{path}[]")


def all_nodes(catalog: Catalog) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(section, path, schema) for every schema node of every tool; section is params/returns."""
    for domain, tool in all_tools(catalog):
        prefix = f"{domain}.{tool.name}"
        yield from (("params", p, s) for p, s in nodes(tool.parameters, f"{prefix}.params"))
        assert tool.returns is not None, f"{prefix} has no returns schema"
        yield from (("returns", p, s) for p, s in nodes(tool.returns, f"{prefix}.returns"))


def write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value))
    return path


def string_prop(**extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": "d", "maxLength": 16, **extra}


def tool_spec(name: str = "transfer", **properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"{name} things.",
        "parameters": {
            "type": "object",
            "properties": properties or {"memo": string_prop(examples=["rent", "gift", "loan"])},
            "additionalProperties": False,
        },
    }


def domain_spec(name: str = "bank", *tools: dict[str, Any]) -> dict[str, Any]:
    return {"domain": name, "description": "A test domain.", "tools": list(tools or [tool_spec()])}


# ------------------------------------------------------------------------------ shipped catalog


def test_shipped_catalog_is_large_and_well_formed(catalog: Catalog) -> None:
    assert len(catalog.domains) >= 25
    assert len(set(catalog.names())) == len(catalog.names())
    for domain in catalog.domains:
        assert 5 <= len(domain.tools) <= 8, domain.name
        assert domain.description
        for tool in domain.tools:
            assert tool.parameters["type"] == "object"
            assert tool.returns is not None and tool.returns["type"] == "object"


def test_every_object_is_closed_and_every_value_is_bounded(catalog: Catalog) -> None:
    problems = []
    for section, path, schema in all_nodes(catalog):
        kind = schema.get("type")
        if kind == "object" and (
            schema.get("additionalProperties") is not False or "properties" not in schema
        ):
            problems.append(f"{path}: object without additionalProperties false and properties")
        if kind == "string" and "maxLength" not in schema:
            problems.append(f"{path}: string without maxLength")
        if kind == "array" and (
            "maxItems" not in schema or not isinstance(schema.get("items"), dict)
        ):
            problems.append(f"{path}: array without maxItems or items")
        if kind in ("integer", "number") and ("minimum" not in schema or "maximum" not in schema):
            problems.append(f"{path}: {kind} without bounds")
        undescribed = [
            name
            for name, inner in schema.get("properties", {}).items()
            if not inner.get("description")
        ]
        if section == "params" and undescribed:
            problems.append(f"{path}: properties without description: {undescribed}")
    assert not problems, "\n".join(problems)


def test_every_open_parameter_value_has_examples(catalog: Catalog) -> None:
    problems = []
    for section, path, schema in all_nodes(catalog):
        open_value = schema.get("type") in ("string", "integer", "number") and "enum" not in schema
        if section == "params" and open_value and len(schema.get("examples", [])) < 3:
            problems.append(f"{path}: fewer than 3 examples")
    assert not problems, "\n".join(problems)


def test_every_example_validates_against_its_property(catalog: Catalog) -> None:
    checker = jsonschema.FormatChecker()
    checked = 0
    for _, _, schema in all_nodes(catalog):
        for example in schema.get("examples", []):
            jsonschema.validate(example, schema, format_checker=checker)
            checked += 1
    assert checked > 500


def test_catalog_uses_nested_objects_arrays_enums_and_optionals(catalog: Catalog) -> None:
    for domain in catalog.domains:
        top = [schema for tool in domain.tools for schema in tool.parameters["properties"].values()]
        assert any(schema.get("type") == "object" for schema in top), (
            f"{domain.name}: no nested object"
        )
        assert any(schema.get("type") == "array" for schema in top), f"{domain.name}: no array"
    kinds = [schema.get("type") for section, _, schema in all_nodes(catalog) if section == "params"]
    assert kinds.count("boolean") > 20
    assert sum("enum" in schema for _, _, schema in all_nodes(catalog)) > 100
    optional = [
        name
        for _, tool in all_tools(catalog)
        for name in tool.parameters["properties"]
        if name not in tool.parameters.get("required", [])
    ]
    assert len(optional) > 100


def test_tool_names_are_snake_case_and_unique_per_domain(catalog: Catalog) -> None:
    for domain in catalog.domains:
        names = [tool.name for tool in domain.tools]
        assert len(set(names)) == len(names)
        assert all(name.islower() and " " not in name and "-" not in name for name in names)
        assert len({tool.description for tool in domain.tools}) == len(names)


def test_example_arguments_validate_for_every_tool(catalog: Catalog) -> None:
    for _, tool in all_tools(catalog):
        required = set(tool.parameters.get("required", []))
        for seed in SEEDS:
            arguments = example_arguments(tool, random.Random(seed))
            jsonschema.validate(arguments, tool.parameters)
            assert required <= set(arguments)


def test_example_arguments_are_deterministic_and_vary(catalog: Catalog) -> None:
    tool = catalog.domain("airline_booking").tools[0]
    first = example_arguments(tool, random.Random(7))
    assert first == example_arguments(tool, random.Random(7))
    assert len({json.dumps(example_arguments(tool, random.Random(s))) for s in range(20)}) > 5


def test_example_arguments_fill_nested_objects_and_arrays() -> None:
    tool = Tool(
        name="ship",
        description="Ship parcels.",
        parameters={
            "type": "object",
            "properties": {
                "parcels": {
                    "type": "array",
                    "maxItems": 4,
                    "uniqueItems": True,
                    "items": {
                        "type": "object",
                        "properties": {
                            "kg": {"type": "number", "minimum": 0.5, "maximum": 2},
                            "tag": {"enum": ["a", "b", "c"]},
                        },
                        "required": ["kg", "tag"],
                        "additionalProperties": False,
                    },
                },
                "count": {"type": "integer", "exclusiveMinimum": 2, "exclusiveMaximum": 5},
                "flag": {"type": "boolean"},
            },
            "required": ["parcels", "count"],
            "additionalProperties": False,
        },
    )
    for seed in range(30):
        arguments = example_arguments(tool, random.Random(seed))
        jsonschema.validate(arguments, tool.parameters)
        assert 1 <= len(arguments["parcels"]) <= 2
        assert arguments["count"] in (3, 4)


def test_example_arguments_refuses_what_it_cannot_invent() -> None:
    tool = Tool(
        name="by_code",
        description="Look up by code.",
        parameters={
            "type": "object",
            "properties": {"code": {"type": "string", "pattern": "^[0-9]{6}$"}},
            "required": ["code"],
        },
    )
    with pytest.raises(ValueError, match="by_code"):
        example_arguments(tool, random.Random(0))


# --------------------------------------------------------------------------------- catalog API


def test_domain_lookup_and_names(catalog: Catalog) -> None:
    assert catalog.names()[0] == catalog.domains[0].name
    assert catalog.domain("banking").name == "banking"
    with pytest.raises(KeyError, match="no domain 'atlantis'"):
        catalog.domain("atlantis")


def test_split_is_deterministic_disjoint_and_complete(catalog: Catalog) -> None:
    train, held_out = catalog.split(0.2, seed=3)
    again_train, again_held_out = catalog.split(0.2, seed=3)
    assert train.names() == again_train.names() and held_out.names() == again_held_out.names()
    assert not set(train.names()) & set(held_out.names())
    assert sorted(train.names() + held_out.names()) == sorted(catalog.names())
    assert len(held_out.names()) == round(len(catalog.names()) * 0.2)
    assert len({tuple(catalog.split(0.2, seed=seed)[1].names()) for seed in range(5)}) > 1


def test_split_ignores_domain_order_and_keeps_both_sides_non_empty(catalog: Catalog) -> None:
    reversed_catalog = Catalog(domains=list(reversed(catalog.domains)))
    assert set(reversed_catalog.split(0.3, seed=1)[1].names()) == set(
        catalog.split(0.3, seed=1)[1].names()
    )
    small = Catalog(domains=catalog.domains[:3])
    train, held_out = small.split(0.01, seed=0)
    assert len(train.names()) == 2 and len(held_out.names()) == 1
    assert small.split(0.0, seed=0)[1].names() == []
    assert small.split(1.0, seed=0)[0].names() == []
    with pytest.raises(ValueError):
        small.split(1.5, seed=0)


def test_domain_model_rejects_duplicate_tools_and_catalog_duplicate_domains() -> None:
    tool = Tool.model_validate(tool_spec())
    with pytest.raises(ValueError, match="duplicate tool names"):
        Domain(name="bank", description="d", tools=[tool, tool])
    domain = Domain(name="bank", description="d", tools=[tool])
    with pytest.raises(ValueError, match="duplicate domain names"):
        Catalog(domains=[domain, domain])


# ---------------------------------------------------------------------------- loading from paths


def test_loads_a_single_domain_a_list_a_wrapper_and_a_directory(tmp_path: Path) -> None:
    single = write_json(tmp_path / "single.json", domain_spec("alpha"))
    assert load_catalog(single).names() == ["alpha"]
    listed = write_json(tmp_path / "listed.json", [domain_spec("beta"), domain_spec("gamma")])
    assert load_catalog(listed).names() == ["beta", "gamma"]
    wrapped = write_json(tmp_path / "wrapped.json", {"domains": [domain_spec("delta")]})
    assert load_catalog(wrapped).names() == ["delta"]
    assert load_catalog(tmp_path).names() == ["beta", "gamma", "alpha", "delta"]


def test_loaded_catalog_round_trips_the_shipped_files(catalog: Catalog, tmp_path: Path) -> None:
    dumped = [
        {"domain": d.name, **d.model_dump(exclude={"name"}, exclude_none=True)}
        for d in catalog.domains
    ]
    assert load_catalog(write_json(tmp_path / "all.json", dumped)) == catalog


def error_for(path: Path) -> str:
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    message = str(caught.value)
    assert "\n" not in message and path.name in message
    return message


def test_invalid_json_is_a_catalog_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"domain": "bank", "tools": [')
    assert "invalid JSON" in error_for(path)


def test_wrong_shapes_are_catalog_errors(tmp_path: Path) -> None:
    assert "got str" in error_for(write_json(tmp_path / "text.json", "bank"))
    assert "no domains" in error_for(write_json(tmp_path / "empty.json", []))
    no_tools = {"domain": "bank", "description": "d"}
    assert "'tools' must be a list" in error_for(write_json(tmp_path / "no_tools.json", no_tools))
    extra = {**domain_spec(), "owner": "me"}
    assert "owner" in error_for(write_json(tmp_path / "extra.json", extra))
    bad_name = domain_spec("Bank Domain")
    assert "Bank Domain" in error_for(write_json(tmp_path / "bad_name.json", bad_name))


def test_missing_path_and_empty_directory_are_catalog_errors(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="no such file"):
        load_catalog(tmp_path / "absent.json")
    with pytest.raises(CatalogError, match=r"no \.json files"):
        load_catalog(tmp_path)


def test_invalid_parameter_schema_names_file_domain_and_tool(tmp_path: Path) -> None:
    bad = tool_spec("transfer", amount={"type": "strin"})
    message = error_for(write_json(tmp_path / "my.json", domain_spec("bank", bad)))
    assert "domain 'bank', tool 'transfer'" in message
    assert "parameters: 'strin' is not valid" in message


def test_required_name_without_property_is_a_catalog_error(tmp_path: Path) -> None:
    bad = tool_spec("transfer")
    bad["parameters"]["required"] = ["amount"]
    message = error_for(write_json(tmp_path / "req.json", domain_spec("bank", bad)))
    assert "tool 'transfer'" in message and "required names without a property" in message


def test_duplicate_tool_names_are_a_catalog_error(tmp_path: Path) -> None:
    message = error_for(
        write_json(tmp_path / "dup.json", domain_spec("bank", tool_spec(), tool_spec()))
    )
    assert "domain 'bank'" in message and "duplicate tool names: ['transfer']" in message


def test_duplicate_domains_across_files_are_a_catalog_error(tmp_path: Path) -> None:
    write_json(tmp_path / "a.json", domain_spec("bank"))
    write_json(tmp_path / "b.json", domain_spec("bank"))
    with pytest.raises(
        CatalogError, match=r"b\.json: duplicate domain 'bank' \(also in .*a\.json\)"
    ):
        load_catalog(tmp_path)


def test_examples_that_do_not_validate_are_a_catalog_error(tmp_path: Path) -> None:
    bad = tool_spec(
        "transfer", amount={"type": "number", "minimum": 1, "maximum": 10, "examples": [5, 50]}
    )
    message = error_for(write_json(tmp_path / "ex.json", domain_spec("bank", bad)))
    assert "tool 'transfer'" in message and "properties.amount" in message and "50" in message


def test_nested_and_return_examples_are_checked_too(tmp_path: Path) -> None:
    nested = tool_spec(
        "transfer",
        to={
            "type": "object",
            "properties": {
                "iban": string_prop(pattern="^[A-Z]{2}[0-9]+$", examples=["DE89370400", "nope"])
            },
            "additionalProperties": False,
        },
    )
    message = error_for(write_json(tmp_path / "nested.json", domain_spec("bank", nested)))
    assert "properties.to.properties.iban" in message and '"nope"' in message
    returning = {
        **tool_spec("transfer"),
        "returns": {"type": "object", "properties": {"id": string_prop(examples=[7])}},
    }
    message = error_for(write_json(tmp_path / "returns.json", domain_spec("bank", returning)))
    assert "returns.properties.id" in message


def test_every_shipped_schema_compiles_to_a_llama_cpp_grammar() -> None:
    """The embedded simulator decodes under these grammars. llama-cpp-python's converter writes
    grammars llama.cpp cannot parse for some patterns (e.g. `\\d`), so each is checked by
    llama.cpp's own grammar parser over the embedded model's vocabulary."""
    import json

    from llama_cpp import Llama
    from llama_cpp import llama_cpp as bindings
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    from trustee_rl.lm.model_files import default_model_path

    llama = Llama(str(default_model_path()), vocab_only=True, verbose=False)
    vocab = bindings.llama_model_get_vocab(llama.model)
    assert not bindings.llama_sampler_init_grammar(
        vocab, b'root ::= "\\d"', b"root"
    )  # the check can fail
    failures = []
    for domain in load_catalog().domains:
        for tool in domain.tools:
            for schema in (tool.parameters, tool.returns):
                if schema is None:
                    continue
                sampler = bindings.llama_sampler_init_grammar(
                    vocab, json_schema_to_gbnf(json.dumps(schema)).encode(), b"root"
                )
                if sampler:
                    bindings.llama_sampler_free(sampler)
                else:
                    failures.append(f"{domain.name}.{tool.name}")
    assert failures == []
