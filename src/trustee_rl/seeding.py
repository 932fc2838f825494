"""One seed per run; every other seed is derived from it by name, so order of execution never matters."""

from __future__ import annotations

import hashlib
import random


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from a run seed and labels, e.g. derive_seed(run_seed, "task", 7)."""
    text = "\x1f".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


def derive_rng(*parts: object) -> random.Random:
    return random.Random(derive_seed(*parts))
