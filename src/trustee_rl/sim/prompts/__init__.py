"""Versioned prompt templates: the wording the simulated world sends to models lives in `<name>.txt`;
code only lays data out (transcripts, lists of facts) and puts the pieces together.

Each file starts with `version: N`, then named sections (`--- name`) in `string.Template` syntax
($name). A conversation template has `--- system` and `--- user`; any file may add fragments (check
texts, complaints, instructions) that code fills in and puts together. A section's text is its lines
without the blank space around them, so spacing between fragments is the code's business.
The tag `name@N` is recorded on the records a template produces, so a changed prompt never
masquerades as an old one: edit a file, bump its version. Files of fragments that other prompts take
in (persona_style, ambiguity_style, rejected_output, json_output) have no tag on any record: changing
one means bumping the versions of the templates whose calls use it.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

_CONVERSATION = ("system", "user")


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: str
    sections: Mapping[str, str]

    @property
    def tag(self) -> str:
        return f"{self.name}@{self.version}"

    def text(self, section: str, **values: Any) -> str:
        """One section filled in."""
        if section not in self.sections:
            raise KeyError(f"prompt {self.name} has no section '{section}'")
        return string.Template(self.sections[section]).substitute(values)

    def render(self, **values: Any) -> list[dict[str, Any]]:
        """The conversation: system and user messages, filled in."""
        return [
            {"role": role, "content": self.text(role, **values).strip()} for role in _CONVERSATION
        ]


@cache
def load_prompt(name: str) -> PromptTemplate:
    text = resources.files(__package__).joinpath(f"{name}.txt").read_text(encoding="utf-8")
    header, _, body = text.partition("\n")
    key, _, version = header.partition(":")
    if key.strip() != "version" or not version.strip():
        raise ValueError(f"prompt {name}: first line must be 'version: N'")
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in body.splitlines():
        if line.startswith("--- "):
            section = line[4:].strip()
            if section in sections:
                raise ValueError(f"prompt {name}: section '{section}' appears twice")
            current = sections[section] = []
        elif current is not None:
            current.append(line)
    if not sections:
        raise ValueError(f"prompt {name}: no '--- name' section")
    if len(set(_CONVERSATION) & sections.keys()) == 1:
        raise ValueError(f"prompt {name}: a conversation needs both '--- system' and '--- user'")
    return PromptTemplate(
        name=name,
        version=version.strip(),
        sections={key: "\n".join(lines).strip() for key, lines in sections.items()},
    )
