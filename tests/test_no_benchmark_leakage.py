"""What builds training data holds nothing from the benchmarks it is evaluated on (BFCL v4, tau2).

Training data comes from the shipped tool catalog, the simulator prompts and the text in the core's
code. None of it may share with BFCL's or tau2's data a function name (compared as snake case, the
part after the last dot), a near-identical tool description, or a run of 8 words (BFCL's questions
and function docs; tau2's task instructions, policies and tool docstrings).

The benchmarks' data is read straight from their installed packages, which are never imported:
importing bfcl_eval writes into its project root. A benchmark that is not installed is skipped.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from trustee_rl.sim.catalog import load_catalog

SHINGLE = 8
# Two descriptions sharing this share of their distinct words say the same thing.
NEAR_IDENTICAL = 0.8
MIN_DESCRIPTION_WORDS = 4
SOURCE_ROOT = Path(__file__).parents[1] / "src" / "trustee_rl"
# Code that may name benchmark things because it runs them; it builds no training data.
NOT_TRAINING = ("evaluate", "testing")
BENCHMARKS = ("bfcl", "tau2")

_WORD = re.compile(r"[a-z0-9]+")


@dataclass
class Corpus:
    """Names (snake case -> where), tool descriptions and all other text of one side."""

    names: dict[str, str] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)  # description -> where
    texts: set[str] = field(default_factory=set)

    def add_tool(self, name: str, description: str, where: str) -> None:
        self.names.setdefault(snake(name), f"{name} ({where})")
        # BFCL's multi-turn docs open with the API's blurb; the tool's own words follow this mark.
        own = description.rpartition("Tool description:")[2].strip()
        self.descriptions.setdefault(own, f"{name} ({where})")
        self.texts.add(description)


def snake(name: str) -> str:
    """`Hotel.searchHotels` -> `search_hotels`."""
    last = name.rpartition(".")[2]
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", last).lower()


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def shingles(text: str) -> Iterator[tuple[str, ...]]:
    found = words(text)
    return (tuple(found[i : i + SHINGLE]) for i in range(len(found) - SHINGLE + 1))


def strings(value: Any, skip: tuple[str, ...] = ()) -> Iterator[str]:
    """Every string in a JSON value, at any depth, leaving out the values of keys in `skip`."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in skip:
                yield from strings(item, skip)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item, skip)


# Schema keys whose values are structure or patterns, not words anybody wrote for people to read.
SCHEMA_SYNTAX = ("type", "pattern", "format", "required", "$ref", "name")


# -- our side ------------------------------------------------------------------------------------


@cache
def training_side() -> Corpus:
    ours = Corpus()
    for domain in load_catalog(None).domains:
        ours.texts.add(domain.description)
        for tool in domain.tools:
            ours.add_tool(tool.name, tool.description, f"catalog {domain.name}")
            for schema in (tool.parameters, tool.returns or {}):
                ours.texts.update(strings(schema, skip=SCHEMA_SYNTAX))
    prompts = resources.files("trustee_rl.sim.prompts")
    for entry in prompts.iterdir():
        if entry.name.endswith(".txt"):
            ours.texts.add(entry.read_text(encoding="utf-8"))
    for module in SOURCE_ROOT.rglob("*.py"):
        if module.relative_to(SOURCE_ROOT).parts[0] not in NOT_TRAINING:
            ours.texts.update(_string_constants(module))
    return ours


def _string_constants(module: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value


# -- the benchmarks' side ------------------------------------------------------------------------


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{name} is not installed (bash scripts/setup.sh --eval installs it)")
    return Path(next(iter(spec.submodule_search_locations)))


@cache
def bfcl_side() -> Corpus:
    data = package_dir("bfcl_eval") / "data"
    theirs = Corpus()
    files = sorted(data.rglob("*.json"))
    assert any(path.name.startswith("BFCL_v4_") for path in files), f"no BFCL data in {data}"
    for path in files:
        where = f"bfcl {path.relative_to(data)}"
        for record in _json_records(path):
            if "name" in record and "description" in record:  # a multi-turn function doc
                _add_function(theirs, record, where)
            for function in record.get("function") or []:
                _add_function(theirs, function, where)
            theirs.texts.update(strings(record.get("question", [])))
    return theirs


def _add_function(corpus: Corpus, function: dict[str, Any], where: str) -> None:
    corpus.add_tool(function["name"], function.get("description", ""), where)
    corpus.texts.update(strings(function.get("parameters", {}), skip=SCHEMA_SYNTAX))


def _json_records(path: Path) -> Iterator[dict[str, Any]]:
    """BFCL's files are JSON lines; a few are one JSON document (lists of ids)."""
    text = path.read_text(encoding="utf-8")
    try:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError:
        records = [json.loads(text)]
    yield from (record for record in records if isinstance(record, dict))


@cache
def tau2_side() -> Corpus:
    package = package_dir("tau2")
    data = package / "data" / "tau2" / "domains"
    theirs = Corpus()
    task_files = sorted(data.glob("*/tasks*.json"))
    assert task_files, f"no tau2 tasks in {data}"
    seen: set[int] = set()
    for path in task_files:
        text = path.read_text(encoding="utf-8")
        if hash(text) in seen:  # tasks.json and tasks_full.json may be one file twice
            continue
        seen.add(hash(text))
        for task in json.loads(text):
            theirs.texts.update(strings([task.get("description"), task.get("user_scenario")]))
            theirs.texts.update(strings(task.get("evaluation_criteria") or {}, skip=("actions",)))
    theirs.texts.update(path.read_text(encoding="utf-8") for path in data.rglob("*.md"))
    for module in sorted((package / "domains").glob("*/*tools.py")):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and any(
                "is_tool" in ast.unparse(decorator) for decorator in node.decorator_list
            ):
                docstring = ast.get_docstring(node) or ""
                where = f"tau2 {module.relative_to(package)}"
                theirs.add_tool(node.name, docstring.split("\n\n")[0], where)
                theirs.texts.add(docstring)
    assert theirs.names, "no tau2 tools found: has the package's layout changed?"
    return theirs


def benchmark_side(benchmark: str) -> Corpus:
    return bfcl_side() if benchmark == "bfcl" else tau2_side()


# -- the checks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("benchmark", BENCHMARKS)
def test_no_catalog_tool_shares_a_name_with_a_benchmark_function(benchmark: str) -> None:
    theirs, ours = benchmark_side(benchmark), training_side()
    shared = {ours.names[name]: theirs.names[name] for name in ours.names.keys() & theirs.names}
    assert shared == {}, "rename these catalog tools"


@pytest.mark.parametrize("benchmark", BENCHMARKS)
def test_no_catalog_tool_description_is_near_identical_to_a_benchmark_ones(
    benchmark: str,
) -> None:
    theirs, ours = benchmark_side(benchmark), training_side()
    their_words = [
        (set(words(text)), where)
        for text, where in theirs.descriptions.items()
        if len(words(text)) >= MIN_DESCRIPTION_WORDS
    ]
    close = []
    for text, tool in ours.descriptions.items():
        mine = set(words(text))
        for other, where in their_words:
            if len(mine & other) >= NEAR_IDENTICAL * len(mine | other):
                close.append(f"{tool} ~ {where}: {text!r}")
    assert close == []


@pytest.mark.parametrize("benchmark", BENCHMARKS)
def test_no_training_text_shares_a_run_of_words_with_the_benchmark(benchmark: str) -> None:
    theirs, ours = benchmark_side(benchmark), training_side()
    mine = {shingle for text in ours.texts for shingle in shingles(text)}
    assert len(mine) > 5_000  # the catalog and prompts were really read
    shared = {
        " ".join(shingle) for text in theirs.texts for shingle in shingles(text) if shingle in mine
    }
    assert shared == set()


def test_names_are_compared_as_snake_case_without_their_namespace() -> None:
    assert snake("Hotel.searchHotels") == "search_hotels"
    assert snake("activateParkingBrake") == "activate_parking_brake"
    assert snake("get_weather_now") == "get_weather_now"
