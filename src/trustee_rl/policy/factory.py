"""One factory for every model spec a command accepts, so a trained checkpoint can be simulated,
evaluated and trained on from the same string:

  embedded               the bundled SmolLM2-135M-Instruct, as a float transformers model
  DIR                    a Hugging Face checkpoint dir (one that `trustee train` wrote, say)
  ORG/NAME               a model id in the local Hugging Face cache
  FILE.gguf              a GGUF file, run by llama.cpp in-process
  http(s)://HOST/v1      a model behind an OpenAI-compatible server (`model_name` picks it)
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from trustee_rl.policy.base import Policy

if TYPE_CHECKING:
    from trustee_rl.lm.openai_http import HTTPClientConfig
    from trustee_rl.policy.transformers import TransformersPolicy

EMBEDDED = "embedded"


def open_policy(
    spec: str,
    *,
    model_name: str | None = None,
    chat_format: str | None = None,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    batch_size: int | None = None,
    http: HTTPClientConfig | None = None,
) -> Policy:
    if spec.startswith(("http://", "https://")):
        from trustee_rl.lm.openai_http import HTTPClientConfig, OpenAIHTTPLM
        from trustee_rl.policy.lm import LMPolicy

        url = spec.rstrip("/")
        return LMPolicy(
            OpenAIHTTPLM(url, model=model_name, **(http or HTTPClientConfig()).model_dump()),
            max_tokens=max_new_tokens,
            temperature=temperature,
            name=f"{model_name or 'default'}@{url}",
        )
    if spec.endswith(".gguf"):
        from trustee_rl.lm.embedded import EmbeddedLM
        from trustee_rl.policy.lm import LMPolicy

        return LMPolicy(EmbeddedLM(Path(spec)), max_tokens=max_new_tokens, temperature=temperature)
    return open_transformers_policy(
        spec,
        chat_format=chat_format,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        batch_size=batch_size,
    )


def open_transformers_policy(
    spec: str,
    *,
    chat_format: str | None = None,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    batch_size: int | None = None,
    batch_sampling: bool = False,
) -> TransformersPolicy:
    """The trainable backend: `embedded`, a checkpoint dir or a hub id, in float32."""
    from trustee_rl.policy.model import load_policy
    from trustee_rl.policy.transformers import DEFAULT_BATCH, TransformersPolicy

    model, tokenizer = load_policy(spec)
    return TransformersPolicy(
        model,
        tokenizer,
        name=policy_label(spec),
        chat_format=chat_format,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        batch_size=batch_size or DEFAULT_BATCH,
        batch_sampling=batch_sampling,
    )


def policy_label(spec: str) -> str:
    """A stable name for a local model. A checkpoint dir's name carries a digest of its weights,
    so a retrained dir is not served stale cached results."""
    path = Path(spec)
    if spec == EMBEDDED or not path.is_dir():
        return spec
    digest = hashlib.sha256()
    for weights in sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin")):
        stat = weights.stat()
        digest.update(f"{weights.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    resolved = path.resolve()
    return f"{resolved.parent.name}/{resolved.name}#{digest.hexdigest()[:8]}"
