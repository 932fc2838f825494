"""Language from templates: what a small simulator cannot write coherently, written by code.

Requests: the embedded 135M simulator, asked for a customer request, often writes placeholders
("Hello [user]") or goals that are not a sentence; a request built from the tool's own description
and the stated facts is coherent by construction. Demonstrations: the agent's and user's turns around
a task's expected calls (ask for what is missing, call, report, or decline when nothing fits).
Wording lives in `prompts/templates.txt`, one variant per line.
"""

from __future__ import annotations

import json
import random
import re
import string

from trustee_rl.sim.prompts import load_prompt

TEMPLATES = load_prompt("templates")


def variant(section: str, rng: random.Random, **values: str) -> str:
    """One of a section's variants, filled in."""
    return _fill(rng.choice(TEMPLATES.sections[section].split("\n")), values)


def _fill(line: str, values: dict[str, str]) -> str:
    return string.Template(line).substitute(values).strip()


def action(description: str) -> str:
    """A tool description as the verb phrase a request is built around: "Search available cars."
    -> "search available cars"."""
    text = description.strip().rstrip(".").strip()
    first = text.split(" ", 1)[0]
    # Keep acronyms and names as written ("SMS", "IBAN"); lower an ordinary leading verb.
    if first[:1].isupper() and not first[1:2].isupper():
        text = text[:1].lower() + text[1:]
    return text


def actions(descriptions: list[str]) -> str:
    phrases = [action(text) for text in descriptions]
    return phrases[0] if len(phrases) == 1 else ", then ".join(phrases)


def fact_name(key: str) -> str:
    """A flattened argument key as words: "pickup.location_code" -> "pickup location code"; the
    counter that tells a second call's key apart ("party_size (2)") is dropped."""
    return re.sub(r" \(\d+\)$", "", key).replace(".", " ").replace("_", " ")


def spoken(value: str) -> str:
    """A fact's value as a person says it: a JSON list (how facts store lists) as its items."""
    if value.startswith("["):
        try:
            items = json.loads(value)
        except json.JSONDecodeError:
            return value
        if isinstance(items, list) and items:
            return " and ".join(
                item if isinstance(item, str) else json.dumps(item) for item in items
            )
    return value


def details(facts: dict[str, str], rng: random.Random) -> str:
    style = rng.choice(TEMPLATES.sections["fact"].split("\n"))
    parts = [
        _fill(style, {"detail": fact_name(key), "value": spoken(value)})
        for key, value in facts.items()
    ]
    return ", ".join(parts) if " is " in style else "; ".join(parts)


def request(descriptions: list[str], stated: dict[str, str], rng: random.Random) -> dict[str, str]:
    """A task's goal and opening message; every stated fact is in the message verbatim."""
    doing = actions(descriptions)
    message = " ".join(
        part
        for part in (
            variant("opener", rng),
            variant("request", rng, action=doing),
            variant("details", rng, details=details(stated, rng)) if stated else "",
        )
        if part
    )
    return {"goal": variant("goal", rng, action=doing), "initial_message": message}


def ask(missing: list[str], rng: random.Random) -> str:
    return variant("ask", rng, details=" and the ".join(fact_name(key) for key in missing))


def answer(facts: dict[str, str], rng: random.Random) -> str:
    return variant("answer", rng, details=details(facts, rng))


def done(tool_names: list[str], rng: random.Random) -> str:
    return variant("done", rng, tools=" and ".join(dict.fromkeys(tool_names)))


def decline(rng: random.Random) -> str:
    return variant("decline", rng)
