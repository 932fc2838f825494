"""Speed of the embedded model: prompt and generation tok/s, Q4_1 (as shipped) vs Q8_0 (re-quantized),
and the cost of grammar-constrained (JSON schema) generation relative to free generation, both
answering the same tool-call request.

Run: .venv/bin/python benchmarks/embedded_speed.py [--repeats N]
Every figure is the best of the repeats (as timeit advises: slower runs are the ones other processes
disturbed), taken in one process with the variants interleaved so that such load hits all alike.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass, field
from typing import Any

from trustee_rl.lm.embedded import EmbeddedLM

LONG_PROMPT = [
    {
        "role": "system",
        "content": "You are a support agent for an airline. You look up bookings, change seats "
        "and issue refunds, always checking the fare rules first. " * 20,
    },
    {"role": "user", "content": "Summarise your duties."},
]
TOOL_PROMPT = [
    {"role": "system", "content": "Answer with one JSON tool call."},
    {"role": "user", "content": "Book me a table for 4 in Lyon tomorrow at 8pm, vegetarian menu."},
]
TOOL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "enum": ["book_table", "cancel_booking", "find_restaurant"]},
        "arguments": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "party_size": {"type": "integer"},
                "time": {"type": "string", "maxLength": 20},
                "notes": {
                    "type": "array",
                    "items": {"type": "string", "maxLength": 20},
                    "maxItems": 3,
                },
            },
            "required": ["city", "party_size", "time", "notes"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "arguments"],
    "additionalProperties": False,
}
GENERATED = 256


@dataclass
class Rates:
    prompt: list[float] = field(default_factory=list)
    free: list[float] = field(default_factory=list)
    grammar: list[float] = field(default_factory=list)


async def prompt_rate(lm: EmbeddedLM) -> float:
    completion = await lm.complete(LONG_PROMPT, max_tokens=1)
    return completion.usage.prompt_tokens / completion.latency_s


async def generation_rate(
    lm: EmbeddedLM, messages: list[dict[str, Any]], schema: dict[str, Any] | None, seed: int
) -> float:
    """Tokens per second after the first, the prompt's cost being measured apart and removed."""
    prompt_only = await lm.complete(messages, max_tokens=1, seed=seed)
    full = await lm.complete(messages, json_schema=schema, max_tokens=GENERATED, seed=seed)
    return (full.usage.completion_tokens - 1) / (full.latency_s - prompt_only.latency_s)


async def measure(lm: EmbeddedLM, rates: Rates, seed: int) -> None:
    rates.prompt.append(await prompt_rate(lm))
    rates.free.append(await generation_rate(lm, TOOL_PROMPT, None, seed))
    rates.grammar.append(await generation_rate(lm, TOOL_PROMPT, TOOL_SCHEMA, seed))


async def main(repeats: int) -> None:
    variants = {
        "Q4_1": EmbeddedLM(quantize_q8=False),
        "Q8_0": EmbeddedLM(quantize_q8=True),
    }
    for lm in variants.values():
        await lm.complete(TOOL_PROMPT, max_tokens=1)  # load (and quantize) outside the timings
    results = {name: Rates() for name in variants}
    for seed in range(repeats):
        for name, lm in variants.items():
            await measure(lm, results[name], seed)
    for name, rates in results.items():
        prompt, free, grammar = (
            max(values) for values in (rates.prompt, rates.free, rates.grammar)
        )
        print(
            f"{name}: prompt {prompt:6.0f} tok/s | generation {free:5.0f} tok/s free, "
            f"{grammar:5.0f} tok/s with JSON grammar (ratio {grammar / free:.2f})"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    asyncio.run(main(parser.parse_args().repeats))
