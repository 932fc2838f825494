"""Text-generation backends behind one async protocol (`LM`). `open_lm` turns a spec into one."""

from __future__ import annotations

from trustee_rl.lm.base import LM, Completion, LMError, LMUnavailable

__all__ = ["LM", "Completion", "LMError", "LMUnavailable", "open_lm"]


def open_lm(spec: str, model: str | None = None) -> LM:
    """`embedded` -> the bundled SmolLM2 in-process; `http(s)://host:port/v1` -> an OpenAI-compatible
    server (vLLM, SGLang, llama.cpp server, Ollama), `model` naming the served model (default: the
    server's first)."""
    if spec == "embedded":
        from trustee_rl.lm.embedded import EmbeddedLM

        return EmbeddedLM()
    if spec.startswith(("http://", "https://")):
        from trustee_rl.lm.openai_http import OpenAIHTTPLM

        return OpenAIHTTPLM(spec.rstrip("/"), model=model)
    raise ValueError(
        f"unknown model spec {spec!r}: use 'embedded' or an http(s):// URL of an OpenAI-compatible server"
    )
