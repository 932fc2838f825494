"""Versioned prompt templates. Each `<name>.txt` starts with `version: N`, then `--- system` and
`--- user` sections in `string.Template` syntax ($name). The version is recorded on every record
a template produces, so a changed prompt never masquerades as an old one."""

from __future__ import annotations

import string
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

# Fragments substituted into the templates; changing one means bumping the versions of those using it.
PERSONA_STYLE = {
    "expert": "You know the domain well and speak precisely.",
    "beginner": "You know the basics but not the jargon, and you explain things loosely.",
    "novice": "You have never done this before; you are unsure and vague.",
}
AMBIGUITY_STYLE = {
    "clear": "State the request and the listed details plainly.",
    "somewhat": "Be a little vague about what exactly you want.",
    "highly": "Be vague: say what you are after only in broad terms.",
}


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: str
    system: str
    user: str

    @property
    def tag(self) -> str:
        return f"{self.name}@{self.version}"

    def render(self, **values: Any) -> list[dict[str, Any]]:
        return [
            {"role": "system", "content": string.Template(self.system).substitute(values).strip()},
            {"role": "user", "content": string.Template(self.user).substitute(values).strip()},
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
            current = sections.setdefault(line[4:].strip(), [])
        elif current is not None:
            current.append(line)
    if set(sections) != {"system", "user"}:
        raise ValueError(f"prompt {name}: needs exactly '--- system' and '--- user' sections")
    return PromptTemplate(
        name=name,
        version=version.strip(),
        system="\n".join(sections["system"]),
        user="\n".join(sections["user"]),
    )
