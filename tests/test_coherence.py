"""The coherence detectors catch what the small simulator really wrote, and pass what a customer
would write (the catalog's own values included)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from trustee_rl.sim.catalog import load_catalog
from trustee_rl.sim.coherence import (
    asks,
    echo_problem,
    instruction_echo_problem,
    off_topic_problem,
    placeholder_problem,
    repetition_problem,
    request_problem,
    sentence_problem,
    unanswered_problem,
    voice_problem,
)

# Written by SmolLM2-135M as task goals and opening messages on the embedded default.
SEEN_OPENING = "Hello [user], I need to change my booking. You can use your [targetdomain] login."
SEEN_GOALS = [",#132685,104]", "./example.png"]
GOOD_GOAL = "The user wants to cancel ride RIDE-e81d05 that was booked for tonight."
GOOD_OPENING = "Hi, can you move my appointment to next week? (appointment id: APT-550218)"


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (SEEN_OPENING, "[user]"),
        ("You can use your [targetdomain] account.", "[targetdomain]"),
        ("Hi, I am {name} and I need a room.", "{name}"),
        ("Hi, I am {{ customer_name }}.", "{{ customer_name }}"),
        ("I am flying from <departure city> tomorrow.", "<departure city>"),
        ("My card number is XXXX-XXXX-1234.", "XXXX"),
        ("Lorem ipsum dolor sit amet.", "Lorem"),
        ("Your goal: $goal", "$goal"),
    ],
)
def test_placeholders_are_found(text: str, found: str) -> None:
    assert placeholder_problem(text) == f'placeholder "{found}"'


@pytest.mark.parametrize(
    "text",
    [
        GOOD_OPENING,
        GOOD_GOAL,
        "Book 2 rooms [2 adults] for 2025-11-28, price under $200.",
        "Is 3 < 5 for the group size? My email is ana@example.org.",
    ],
)
def test_real_text_has_no_placeholder(text: str) -> None:
    assert placeholder_problem(text) is None


def words_in(schema: Any) -> Iterator[str]:
    """The descriptions, examples and enum values of a schema, at any depth (not its patterns)."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "description" and isinstance(value, str):
                yield value
            elif key in ("examples", "enum"):
                yield from (str(item) for item in value)
            else:
                yield from words_in(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from words_in(item)


def test_no_catalog_text_or_example_value_reads_as_a_placeholder() -> None:
    """Stated facts come from the catalog's examples and land in opening messages verbatim."""
    catalog = load_catalog(None)
    texts = [
        text
        for domain in catalog.domains
        for tool in domain.tools
        for text in [tool.description, *words_in(tool.parameters), *words_in(tool.returns)]
    ]
    assert len(texts) > 500
    flagged = {text: placeholder_problem(text) for text in texts if placeholder_problem(text)}
    assert flagged == {}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (SEEN_GOALS[0], "no letters at all"),
        (SEEN_GOALS[1], "only 0 words, not a sentence"),
        ("Check weather", "only 2 words, not a sentence"),
        ("iris garnet harbor", "only 3 words, not a sentence"),
        (
            "Order 88213 1 2025-11-28 14:00 #4411 for me on it",
            "mostly digits and punctuation, not a sentence",
        ),
        (
            "see /tmp/a.png ./b.txt C:\\docs\\c.pdf https://x.org/d ~/e.csv and also more",
            "mostly codes or paths, not a sentence",
        ),
    ],
)
def test_scraps_are_not_sentences(text: str, reason: str) -> None:
    assert sentence_problem(text) == reason


@pytest.mark.parametrize(
    "text",
    [
        GOOD_GOAL,
        GOOD_OPENING,
        "Book a table for 4 at rst_2291 on 2025-11-28.",
        "The user wants the lock.back_door device locked and guest code 903311 set.",
    ],
)
def test_sentences_pass(text: str) -> None:
    assert sentence_problem(text) is None


def test_a_request_names_the_field_at_fault() -> None:
    assert request_problem(SEEN_GOALS[1], GOOD_OPENING) == "goal: only 0 words, not a sentence"
    assert request_problem(GOOD_GOAL, SEEN_OPENING) == 'initial_message: placeholder "[user]"'
    assert request_problem(GOOD_GOAL, GOOD_OPENING) is None
    looping = "I want to book I want to book I want to book a ride"
    assert request_problem(GOOD_GOAL, looping) == "initial_message: repeats the same words"


def test_a_goal_must_be_about_the_tasks_subject() -> None:
    topic = "ride hailing. Book, track and cancel rides. Cancel a scheduled ride."
    assert off_topic_problem(GOOD_GOAL, topic) is None  # 'ride' and 'booked' both count
    elsewhere = "The user wants to learn about the history of ancient Rome."
    assert off_topic_problem(elsewhere, topic) == "says nothing about the task's subject"
    assert request_problem(elsewhere, GOOD_OPENING, topic=topic) == (
        "goal: says nothing about the task's subject"
    )
    assert request_problem(elsewhere, GOOD_OPENING) is None  # no topic given, no topic check


def test_repetition_reuses_the_loop_detector_and_echo_catches_a_copied_turn() -> None:
    assert repetition_problem("yes yes yes yes") is None  # a run of 3 words must recur 3 times
    assert repetition_problem("I need it now. I need it now. I need it now.") == (
        "repeats the same words"
    )
    opening = "Hi, I need to cancel my ride for tonight, please help me."
    assert echo_problem("Hi, I need to cancel my ride for tonight please help me!", [opening]) == (
        "copies an earlier message"
    )
    assert echo_problem("My ride id is RIDE-e81d05, and it was for tonight.", [opening]) is None
    assert echo_problem("Thanks!", ["Thanks!"]) is None  # short turns may well recur


FACTS = {"city": "Oslo", "booking_id": "BK-2291", "location.place": "Seattle, WA"}


@pytest.mark.parametrize(
    ("question", "reply", "reason"),
    [
        ("Which city are you in?", "I would like today's weather.", "city"),
        ("What is your booking ID?", "Can you hurry up please?", "booking id"),
        ("Please provide the place you mean.", "It is cold there.", "location place"),
    ],
)
def test_a_reply_that_ignores_a_question_about_a_private_fact_is_caught(
    question: str, reply: str, reason: str
) -> None:
    assert unanswered_problem(question, reply, FACTS) == (
        f"does not answer the question about {reason}"
    )


@pytest.mark.parametrize(
    ("question", "reply"),
    [
        ("Which city are you in?", "I am in oslo."),
        ("What is your booking ID?", "It is BK-2291."),
        ("Which place?", "Seattle WA, thanks."),  # the value's words, other punctuation
        ("Do you want the forecast in celsius?", "Yes, celsius."),  # asks about no private fact
        ("I have cancelled the booking.", "Thanks!"),  # asks nothing
    ],
)
def test_a_reply_that_answers_or_was_not_asked_passes(question: str, reply: str) -> None:
    assert unanswered_problem(question, reply, FACTS) is None


def test_a_yes_no_fact_is_answered_in_any_words() -> None:
    facts = {"include_alerts": "true"}
    assert unanswered_problem("Should I include alerts?", "Yes please.", facts) is None


def test_asking_is_a_question_mark_or_a_request() -> None:
    assert asks("Which city?")
    assert asks("Please provide your booking id.")
    assert asks("Let me know the date.")
    assert not asks("I have booked it.")


# Also written by SmolLM2-135M on the embedded default: as the customer, and as its opening.
SEEN_AS_CUSTOMER = [
    "How can I help you today? (location.place: Melbourne; days: 5)",
    ". Thank you for asking, I can help with a wide range of service requests.",
    "You've already responded. The user wants a specialist in ophthalmology.",
]
TASKGEN_INSTRUCTIONS = (
    '- "goal": one sentence describing what the user wants done, in third person.\n'
    '- "initial_message": the user\'s first message to the assistant, in first person.'
)


@pytest.mark.parametrize("text", SEEN_AS_CUSTOMER)
def test_a_customer_speaking_as_the_assistant_is_caught(text: str) -> None:
    assert (voice_problem(text) or "").startswith("speaks as the assistant or about the user")


@pytest.mark.parametrize(
    "text", [GOOD_OPENING, "I can't log in; can you help me reset my password?", "Thanks!"]
)
def test_a_customer_speaking_as_a_customer_passes(text: str) -> None:
    assert voice_problem(text) is None


def test_copied_instructions_are_caught() -> None:
    seen = "One sentence describing what the user is asking. (specialty: ophthalmology)"
    assert instruction_echo_problem(seen, TASKGEN_INSTRUCTIONS) == (
        'copies the instructions ("one sentence describing what the")'
    )
    assert instruction_echo_problem(GOOD_GOAL, TASKGEN_INSTRUCTIONS) is None
    echoed = "One sentence describing what the customer needs done today."
    assert request_problem(echoed, GOOD_OPENING, instructions=TASKGEN_INSTRUCTIONS) == (
        'goal: copies the instructions ("one sentence describing what the")'
    )
    assert request_problem(GOOD_GOAL, GOOD_OPENING, instructions=TASKGEN_INSTRUCTIONS) is None
