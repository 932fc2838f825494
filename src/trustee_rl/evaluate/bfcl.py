"""BFCL v4, offline, with the `bfcl-eval` package's own data, tool conversion and checkers.

The model is asked the way BFCL asks function-calling models: BFCL's function docs (with its
language hints) converted to OpenAI tools by BFCL's own converter, the entry's messages as they are.
The policy renders and parses them in its training format; its calls become BFCL's decoded form
`[{name: {arg: value}}]`, which BFCL's AST checker grades. Multi-turn entries run BFCL's loop
(up to 20 steps a turn, held-out functions added where the entry says) with the backends and the
checker in a sandbox process, since both `eval()` text built from model output.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustee_rl.evaluate.bfcl_sandbox import MODEL_NAME, Sandbox, SandboxError
from trustee_rl.evaluate.harness import CategoryResults, Item, Progress, Scored, run_benchmark
from trustee_rl.evaluate.results import ItemKey
from trustee_rl.policy.base import Conversation, Policy
from trustee_rl.schema import Message, Tool

BENCHMARK = "bfcl"

NON_LIVE = [
    "simple_python",
    "simple_java",
    "simple_javascript",
    "multiple",
    "parallel",
    "parallel_multiple",
    "irrelevance",
]
LIVE = [
    "live_simple",
    "live_multiple",
    "live_parallel",
    "live_parallel_multiple",
    "live_irrelevance",
    "live_relevance",
]
MULTI_TURN = [
    "multi_turn_base",
    "multi_turn_miss_func",
    "multi_turn_miss_param",
    "multi_turn_long_context",
]
CATEGORIES = NON_LIVE + LIVE + MULTI_TURN
# Scored by whether the reply calls a function at all; every other single-turn category by AST.
IRRELEVANCE = ("irrelevance", "live_irrelevance")
RELEVANCE = (*IRRELEVANCE, "live_relevance")
AST = [category for category in NON_LIVE + LIVE if category not in RELEVANCE]
NEEDS_INTERNET = {
    "web_search_base": "searches the live web",
    "web_search_no_snippet": "searches the live web",
    "memory_vector": "downloads an embedding model for its vector store",
}
GROUPS = {"non_live": NON_LIVE, "live": LIVE, "multi_turn": MULTI_TURN, "all": CATEGORIES}
DEFAULT_CONCURRENCY = 16


def resolve_categories(names: list[str]) -> tuple[list[str], list[str]]:
    """Categories to run, in BFCL's order, and the lines saying which were skipped and why."""
    chosen: set[str] = set()
    skipped: list[str] = []
    for name in names:
        if name in GROUPS:
            chosen.update(GROUPS[name])
        elif name in CATEGORIES:
            chosen.add(name)
        elif name in NEEDS_INTERNET:
            skipped.append(f"skipped {name}: it {NEEDS_INTERNET[name]}, and evaluation is offline")
        else:
            known = ", ".join([*GROUPS, *CATEGORIES])
            raise ValueError(f"unknown BFCL category {name!r}; known: {known}")
    return [category for category in CATEGORIES if category in chosen], skipped


def use_project_root(out: Path) -> None:
    """bfcl-eval writes under BFCL_PROJECT_ROOT (site-packages when unset); it must be set before
    bfcl_eval is first imported."""
    root = out / "bfcl_project"
    root.mkdir(parents=True, exist_ok=True)
    os.environ["BFCL_PROJECT_ROOT"] = str(root.resolve())


def _register_model() -> None:
    """The checker looks the model up in BFCL's registry, to learn whether tool names had their dots
    replaced (they have: BFCL's converter does it for OpenAI-style tools)."""
    from bfcl_eval.constants.model_config import MODEL_CONFIG_MAPPING, ModelConfig
    from bfcl_eval.model_handler.api_inference.openai_completion import (
        OpenAICompletionsHandler,
    )

    MODEL_CONFIG_MAPPING.setdefault(
        MODEL_NAME,
        ModelConfig(
            model_name=MODEL_NAME,
            display_name=MODEL_NAME,
            url="",
            org="",
            license="",
            model_handler=OpenAICompletionsHandler,
            input_price=None,
            output_price=None,
            is_fc_model=True,
            underscore_to_dot=True,
        ),
    )


@dataclass
class Entry:
    category: str
    data: dict[str, Any]  # as the model is shown it: function docs with BFCL's language hints
    answer: Any  # BFCL's possible answers (AST), ground-truth calls per turn (multi-turn), or None
    checked_functions: list[dict[str, Any]]  # the docs the AST checker reads: without the hints

    @property
    def id(self) -> str:
        return str(self.data["id"])


def load_entries(category: str, limit: int | None) -> list[Entry]:
    from bfcl_eval.utils import load_dataset_entry, load_ground_truth_entry

    shown = load_dataset_entry(category, include_prereq=False, include_language_specific_hint=True)
    plain = load_dataset_entry(category, include_prereq=False, include_language_specific_hint=False)
    plain_functions = {row["id"]: row["function"] for row in plain}
    answers: dict[str, Any] = {}
    if category not in RELEVANCE:
        answers = {row["id"]: row["ground_truth"] for row in load_ground_truth_entry(category)}
    return [
        Entry(category, row, answers.get(row["id"]), plain_functions[row["id"]])
        for row in shown[:limit]
    ]


def bfcl_tools(functions: list[dict[str, Any]]) -> list[Tool]:
    from bfcl_eval.constants.enums import ModelStyle
    from bfcl_eval.constants.type_mappings import GORILLA_TO_OPENAPI
    from bfcl_eval.model_handler.utils import convert_to_tool

    specs = convert_to_tool(functions, GORILLA_TO_OPENAPI, ModelStyle.OPENAI_COMPLETIONS)
    # Built without validation: BFCL's schemas are the benchmark's, not ours to reject.
    return [
        Tool.model_construct(
            name=spec["function"]["name"],
            description=spec["function"].get("description", ""),
            parameters=spec["function"]["parameters"],
            returns=None,
        )
        for spec in specs
    ]


def _messages(turn: list[dict[str, Any]]) -> list[Message]:
    return [Message(role=message["role"], content=message["content"]) for message in turn]


def decoded_calls(reply: Message) -> list[dict[str, dict[str, Any]]] | str:
    """The reply in BFCL's decoded form, or why it has none."""
    if not reply.tool_calls:
        return "no function call in the reply"
    broken = [call.parse_error for call in reply.tool_calls if call.parse_error]
    if broken:
        return f"unparseable call: {broken[0]}"
    return [{call.name: call.arguments} for call in reply.tool_calls]


@dataclass
class MultiTurnPlay:
    """A multi-turn entry as played: BFCL's call text per turn and step, or why it stopped."""

    decoded: list[list[list[str]]]
    transcript: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


class BfclBenchmark:
    """Some BFCL categories, as a harness `Benchmark`. Multi-turn entries run BFCL's backends and
    checker in a sandbox process that lives as long as the session."""

    name = BENCHMARK

    def __init__(
        self,
        out: Path,
        categories: Sequence[str],
        limit: int | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        use_project_root(out)
        _register_model()
        self.categories = list(categories)
        self.limit = limit
        self.concurrency = concurrency
        self.settings: dict[str, Any] = {}
        self.sandbox = Sandbox(out / "bfcl_sandbox")

    def items(self) -> list[Item[Entry]]:
        return [
            Item(ItemKey(category, entry.id), entry)
            for category in self.categories
            for entry in load_entries(category, self.limit)
        ]

    @asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await self.sandbox.close()

    async def play(self, item: Item[Entry], policy: Policy) -> Message | MultiTurnPlay:
        entry = item.data
        if entry.category in MULTI_TURN:
            return await self._play_multi_turn(entry, policy)
        conversation = Conversation(
            _messages(entry.data["question"][0]), bfcl_tools(entry.data["function"]), key=entry.id
        )
        (reply,) = await policy.act([conversation])
        return reply

    async def score(self, item: Item[Entry], outcome: Message | MultiTurnPlay) -> Scored:
        if isinstance(outcome, Message):
            valid, detail = check_single_turn(item.data, outcome)
            return Scored(float(valid), {"reply": outcome.model_dump(mode="json"), **detail})
        if outcome.error is not None:
            return Scored(0.0, {"error": outcome.error, "transcript": outcome.transcript})
        try:
            verdict = await self.sandbox.check(outcome.decoded, item.data.answer, item.data.data)
        except SandboxError as error:
            return Scored(0.0, {"error": f"sandbox: {error}", "transcript": outcome.transcript})
        return Scored(
            float(bool(verdict["valid"])),
            {
                "error": None if verdict["valid"] else verdict.get("error_message", verdict),
                "transcript": outcome.transcript,
            },
        )

    async def _play_multi_turn(self, entry: Entry, policy: Policy) -> MultiTurnPlay:
        """BFCL's loop: each turn's user message (or, where the entry holds functions back, the
        prompt announcing them), then up to BFCL's step limit of calls run in the sandbox, until
        a reply without calls moves on to the next turn."""
        from bfcl_eval.constants.default_prompts import (
            DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC,
            MAXIMUM_STEP_LIMIT,
        )
        from bfcl_eval.model_handler.utils import convert_to_function_call

        functions = list(entry.data["function"])
        held_out: dict[str, list[dict[str, Any]]] = entry.data.get("missed_function", {})
        long_context = "long_context" in entry.category
        messages: list[Message] = []
        played = MultiTurnPlay([])
        try:
            for turn, turn_messages in enumerate(entry.data["question"]):
                if str(turn) in held_out:
                    functions += held_out[str(turn)]
                    turn_messages = [
                        {"role": "user", "content": DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC}
                    ]
                tools = bfcl_tools(functions)
                messages += _messages(turn_messages)
                turn_decoded: list[list[str]] = []
                for step in range(MAXIMUM_STEP_LIMIT + 1):
                    key = f"{entry.id}:{turn}:{step}"
                    (reply,) = await policy.act([Conversation(list(messages), tools, key=key)])
                    messages.append(reply)
                    played.transcript.append(
                        {"turn": turn, "step": step, "reply": reply.model_dump(mode="json")}
                    )
                    calls = decoded_calls(reply)
                    if isinstance(calls, str):  # BFCL moves on to the next turn
                        break
                    strings = convert_to_function_call(calls)  # BFCL's own call text
                    turn_decoded.append(strings)
                    results = await self.sandbox.execute(strings, entry.data, long_context)
                    messages += [
                        Message(role="tool", content=result, tool_call_id=call.id, name=call.name)
                        for call, result in zip(reply.tool_calls, results, strict=True)
                    ]
                else:
                    played.error = (
                        f"force-terminated: more than {MAXIMUM_STEP_LIMIT} steps in turn {turn}"
                    )
                    return played
                played.decoded.append(turn_decoded)
        except SandboxError as error:
            played.error = f"sandbox: {error}"
        return played

    def category_figures(self, results: CategoryResults) -> dict[str, Any]:
        scores = [result.score for result in results.results]
        return {
            "accuracy": sum(scores) / results.items if results.items else 0.0,
            "entries": results.items,
            "wall_s": results.wall_s,
            "from_cache": results.from_cache,
        }

    def figures(self, categories: dict[str, dict[str, Any]]) -> dict[str, Any]:
        known = {
            category: categories[category] for category in CATEGORIES if category in categories
        }
        return {
            "scores": {category: row["accuracy"] for category, row in known.items()}
            | {f"{name} (overall)": value for name, value in bfcl_groups(known).items()},
            "categories": known,
        }


async def evaluate_bfcl(
    policy: Policy,
    out: Path,
    categories: Sequence[str],
    limit: int | None = None,
    *,
    progress: Progress | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> dict[str, Any]:
    """`policy` on the first `limit` entries of each category, resuming from the cache in `out`;
    the figures of the categories evaluated into `out` before are kept."""
    benchmark = BfclBenchmark(out, categories, limit, concurrency)
    return await run_benchmark(benchmark, policy, out, progress=progress)


def check_single_turn(entry: Entry, reply: Message) -> tuple[bool, dict[str, Any]]:
    """BFCL's verdict on one reply: its relevance rule or its AST checker."""
    from bfcl_eval.constants.enums import Language
    from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker

    calls = decoded_calls(reply)
    if entry.category in IRRELEVANCE:
        return isinstance(calls, str), {
            "error": None if isinstance(calls, str) else "called a function"
        }
    if entry.category == "live_relevance":
        return not isinstance(calls, str), {"error": calls if isinstance(calls, str) else None}
    if isinstance(calls, str):
        return False, {"error": calls}
    language = {
        "simple_java": Language.JAVA,
        "simple_javascript": Language.JAVASCRIPT,
    }.get(entry.category, Language.PYTHON)
    verdict = ast_checker(
        entry.checked_functions, calls, entry.answer, language, entry.category, MODEL_NAME
    )
    return bool(verdict["valid"]), {
        "error": None
        if verdict["valid"]
        else {"type": verdict.get("error_type"), "detail": verdict.get("error")},
    }


def bfcl_groups(figures: dict[str, dict[str, Any]]) -> dict[str, float]:
    """BFCL's leaderboard groupings, by BFCL's own arithmetic, for each group whose categories
    were all evaluated (BFCL shows N/A otherwise)."""
    from bfcl_eval.eval_checker.eval_runner_helper import (
        calculate_unweighted_accuracy,
        calculate_weighted_accuracy,
    )

    def score(category: str) -> dict[str, Any]:
        row = figures[category]
        return {
            "accuracy": row["accuracy"],
            "total_count": row["entries"],
            "display_accuracy": row["accuracy"],
        }

    def have(categories: Sequence[str]) -> bool:
        return all(category in figures for category in categories)

    simple = ("simple_python", "simple_java", "simple_javascript")
    non_live_ast = [category for category in AST if category in NON_LIVE]
    live_ast = [category for category in AST if category in LIVE]
    groups: dict[str, float] = {}
    if have(non_live_ast):
        by_kind = [calculate_unweighted_accuracy([score(c) for c in simple])]
        by_kind += [score(c) for c in non_live_ast if c not in simple]
        groups["non_live ast"] = calculate_unweighted_accuracy(by_kind)["accuracy"]
    if have(live_ast):
        groups["live ast"] = calculate_weighted_accuracy([score(c) for c in live_ast])["accuracy"]
    if have(MULTI_TURN):
        multi_turn = calculate_unweighted_accuracy([score(c) for c in MULTI_TURN])
        groups["multi_turn"] = multi_turn["accuracy"]
    if have(RELEVANCE):
        relevance = calculate_unweighted_accuracy([score(c) for c in RELEVANCE])
        groups["hallucination"] = relevance["accuracy"]
    return {name: float(value) for name, value in groups.items()}
