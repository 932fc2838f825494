"""Text-generation backends behind one async protocol (`LM`). `open_lm` turns a spec into one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trustee_rl.lm.base import LM, Completion, LMError, LMUnavailable

if TYPE_CHECKING:
    from trustee_rl.lm.openai_http import HTTPClientConfig

__all__ = ["LM", "Completion", "LMError", "LMUnavailable", "open_lm"]


def open_lm(spec: str, model: str | None = None, http: HTTPClientConfig | None = None) -> LM:
    """`embedded` -> the bundled SmolLM2 in-process; `http(s)://host:port/v1` -> an OpenAI-compatible
    server (vLLM, SGLang, llama.cpp server, Ollama), `model` naming the served model (default: the
    server's first), reached with the timeout and retries of `http`."""
    if spec == "embedded":
        from trustee_rl.lm.embedded import EmbeddedLM

        return EmbeddedLM()
    if spec.startswith(("http://", "https://")):
        from trustee_rl.lm.openai_http import HTTPClientConfig, OpenAIHTTPLM

        return OpenAIHTTPLM(
            spec.rstrip("/"), model=model, **(http or HTTPClientConfig()).model_dump()
        )
    raise ValueError(
        f"unknown model spec {spec!r}: use 'embedded' or an http(s):// URL of an OpenAI-compatible server"
    )
