"""Detectors for simulator text that no real customer would write.

A small simulator fills a template's gaps with placeholders ("Hello [user]"), writes a goal that is
a scrap of punctuation and digits (",#132685,104]"), copies its instructions ("One sentence
describing what the user is asking."), speaks as the assistant when it plays the customer, loops,
or answers a question with something else. Each detector is pure: it takes text and returns a one-line reason, or None when the text
passes. The simulators turn a reason into a complaint (worded in their prompt file) and retry; the
coherence benchmark counts reasons over a stored run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from trustee_rl.sim.structured import repetitive

MIN_WORDS = 4
# A real sentence is mostly letters; codes, ids and dates may fill the rest.
MIN_LETTER_SHARE = 0.4
# Two user turns sharing this share of their words (and at least ECHO_MIN_WORDS) are one turn twice.
ECHO_OVERLAP = 0.8
ECHO_MIN_WORDS = 6

_SLOT = r"[A-Za-z_][A-Za-z0-9_ .\-]{0,38}"
_PLACEHOLDERS = [
    re.compile(rf"\[\s*{_SLOT}\s*\]"),  # [user], [Your Name]
    re.compile(rf"\{{\{{?\s*{_SLOT}\s*\}}?\}}"),  # {name}, {{name}}
    re.compile(rf"<\s*{_SLOT}\s*>"),  # <city>, <your name>
    re.compile(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?"),  # an unfilled $template variable
    re.compile(r"\b[Xx]{3,}\b"),  # XXX, xxxx-xxxx
    re.compile(r"\blorem\b|\bipsum\b", re.IGNORECASE),
]
_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
_QUESTION_OPENERS = (
    "please provide",
    "please share",
    "please tell",
    "please give",
    "please confirm",
    "please send",
    "please let me know",
    "could you tell",
    "could you provide",
    "could you share",
    "can you tell",
    "can you provide",
    "can you share",
    "let me know",
    "i need your",
    "i will need",
    "i'll need",
)
# A customer's message that says these speaks as the assistant, or about the user, not as the user.
_ASSISTANT_VOICE = (
    "how can i help",
    "how may i help",
    "how can i assist",
    "how may i assist",
    "i can help you",
    "i can help with",
    "i can assist",
    "anything else i can",
    "as an ai",
    "language model",
    "the user wants",
    "the user is",
    "the user's",
)
# Instructions copied into the output: a run of this many words shared with the prompt.
ECHO_SPAN = 5
# Parts of a fact's key that say nothing about which fact it is.
_GENERIC_KEY_WORDS = {"id", "the", "of", "to", "for", "and", "value", "info", "details"}
# Words any request may use whatever its subject.
_STOPWORDS = frozenset({
    "about", "after", "also", "before", "could", "from", "have", "into", "like", "need", "needs",
    "please", "some", "that", "their", "them", "then", "there", "they", "this", "user", "wants",
    "want", "what", "when", "where", "which", "with", "would", "your",
})  # fmt: skip


def placeholder_problem(text: str) -> str | None:
    """A template gap left unfilled: [user], {name}, <city>, $goal, XXX, lorem ipsum."""
    for pattern in _PLACEHOLDERS:
        if (found := pattern.search(text)) is not None:
            return f'placeholder "{found.group(0)}"'
    return None


def sentence_problem(text: str, min_words: int = MIN_WORDS) -> str | None:
    """Whether `text` fails to be a sentence: too few words, or mostly digits, punctuation, paths."""
    tokens = text.split()
    if not any(char.isalpha() for char in text):
        return "no letters at all"
    words = [token for token in tokens if _is_word(token)]
    if len(words) < min_words:
        return f"only {len(words)} word{'s' if len(words) != 1 else ''}, not a sentence"
    visible = [char for char in text if not char.isspace()]
    letters = sum(char.isalpha() for char in visible)
    if letters < MIN_LETTER_SHARE * len(visible):
        return "mostly digits and punctuation, not a sentence"
    if len(words) < len(tokens) / 2:
        return "mostly codes or paths, not a sentence"
    return None


def off_topic_problem(text: str, topic: str) -> str | None:
    """Whether `text` shares no content word with `topic` (a domain's name, its description, the
    steps the task asks for): a request about something else entirely."""
    wanted = content_words(topic)
    if not wanted:
        return None
    if any(_same_stem(word, other) for word in content_words(text) for other in wanted):
        return None
    return "says nothing about the task's subject"


def repetition_problem(text: str) -> str | None:
    """Whether `text` loops on itself: small models repeat a run of words until the token limit."""
    return "repeats the same words" if repetitive(text) else None


def echo_problem(text: str, earlier: Sequence[str]) -> str | None:
    """Whether `text` copies one of the `earlier` messages instead of saying something new."""
    mine = set(_words(text))
    if len(mine) < ECHO_MIN_WORDS:
        return None
    for before in earlier:
        theirs = set(_words(before))
        if len(mine & theirs) >= ECHO_OVERLAP * max(len(mine), len(theirs)):
            return "copies an earlier message"
    return None


def voice_problem(text: str) -> str | None:
    """Whether a message meant to come from the customer speaks as the assistant or about "the
    user" (small models swap roles, or describe the request instead of making it)."""
    spoken = " ".join(_words(text.replace("’", "'")))
    for phrase in _ASSISTANT_VOICE:
        if f" {phrase} " in f" {spoken} ":
            return f'speaks as the assistant or about the user ("{phrase}")'
    return None


def instruction_echo_problem(text: str, instructions: str) -> str | None:
    """Whether `text` copies a run of ECHO_SPAN words from the `instructions` it was written under."""
    theirs = _words(instructions)
    runs = {tuple(theirs[i : i + ECHO_SPAN]) for i in range(len(theirs) - ECHO_SPAN + 1)}
    mine = _words(text)
    for i in range(len(mine) - ECHO_SPAN + 1):
        if tuple(mine[i : i + ECHO_SPAN]) in runs:
            return f'copies the instructions ("{" ".join(mine[i : i + ECHO_SPAN])}")'
    return None


def unanswered_problem(question: str, reply: str, facts: Mapping[str, str]) -> str | None:
    """Whether the agent asked for some of the user's private facts and `reply` gives none of them."""
    asked = asked_facts(question, facts)
    if not asked or any(_gives(reply, facts[key]) for key in asked):
        return None
    return f"does not answer the question about {', '.join(_key_words_text(k) for k in asked)}"


def asked_facts(question: str, facts: Mapping[str, str]) -> list[str]:
    """The keys of the private facts an agent message asks for.

    Only facts the message names count (by the words of their key: "booking id" for
    `booking_id`); a yes/no fact is left out, since "yes" answers it in any wording."""
    if not asks(question):
        return []
    return [
        key
        for key, value in facts.items()
        if value.strip().lower() not in {"true", "false"} and _names_fact(question, key)
    ]


def request_problem(
    goal: str, initial_message: str, *, topic: str = "", instructions: str = ""
) -> str | None:
    """The first problem of a written request (a task's goal and the user's opening message, as
    the writer wrote them, before any stated facts are appended).

    `topic` is free text naming the task's subject (domain title and description, the steps'
    descriptions); when given, a goal sharing no content word with it is a problem too.
    `instructions` is the prompt the writer was given; when given, copying from it is a problem.
    The reason names the field: 'goal: only 1 word, not a sentence'."""
    checks = (
        ("goal", placeholder_problem(goal)),
        ("initial_message", placeholder_problem(initial_message)),
        ("goal", sentence_problem(goal)),
        ("initial_message", sentence_problem(initial_message)),
        ("goal", repetition_problem(goal)),
        ("initial_message", repetition_problem(initial_message)),
        ("initial_message", voice_problem(initial_message)),
        ("goal", off_topic_problem(goal, topic) if topic else None),
        ("goal", instruction_echo_problem(goal, instructions) if instructions else None),
        (
            "initial_message",
            instruction_echo_problem(initial_message, instructions) if instructions else None,
        ),
    )
    return next((f"{field}: {reason}" for field, reason in checks if reason), None)


def asks(message: str) -> bool:
    """Whether an agent message asks the user something."""
    text = message.lower()
    return "?" in text or any(opener in text for opener in _QUESTION_OPENERS)


def content_words(text: str) -> set[str]:
    """The words of `text` that carry meaning: four letters or more, not a stopword."""
    return {word for word in _words(text) if len(word) >= 4 and word not in _STOPWORDS}


def _words(text: str) -> list[str]:
    return [match.group(0).lower() for match in _WORD.finditer(text)]


def _is_word(token: str) -> bool:
    """A whitespace token that reads as a word: letters, perhaps with punctuation stuck to it, and
    not a path, address or file name."""
    core = token.strip(".,;:!?\"'()[]{}")
    if not core or any(char in core for char in "/\\@#=_<>|{}[]"):
        return False
    if re.fullmatch(r"[^\W\d_]+\.[a-z0-9]{2,4}", core):  # example.png
        return False
    letters = sum(char.isalpha() for char in core)
    return letters >= 1 and letters >= 0.6 * len(core)


def _same_stem(first: str, second: str) -> bool:
    """book ~ booking, reserve ~ reservation, flight ~ flights; not order ~ ordinary."""
    shorter = min(len(first), len(second))
    common = 0
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        common += 1
    return common >= min(shorter, 5) and common >= 0.7 * shorter


def _key_words(key: str) -> list[str]:
    words = _words(key.replace("_", " ").replace(".", " "))
    return [word for word in words if word not in _GENERIC_KEY_WORDS and len(word) >= 3] or words


def _key_words_text(key: str) -> str:
    return " ".join(_words(key.replace("_", " ").replace(".", " ")))


def _names_fact(question: str, key: str) -> bool:
    spoken = _words(question)
    return any(_same_stem(word, said) for word in _key_words(key) for said in spoken)


def _gives(reply: str, value: str) -> bool:
    """Whether `reply` carries `value`, verbatim or word by word ('Seattle WA' for 'Seattle, WA')."""
    said = reply.lower()
    wanted = value.strip().lower()
    if wanted in said:
        return True
    parts = re.findall(r"[^\W_]+", wanted)
    return bool(parts) and all(part in re.findall(r"[^\W_]+", said) for part in parts)
