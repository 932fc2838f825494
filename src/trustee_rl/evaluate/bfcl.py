"""BFCL v4, offline, with the `bfcl-eval` package's own data, tool conversion and checkers.

The model is asked the way BFCL asks function-calling models: BFCL's function docs (with its
language hints) converted to OpenAI tools by BFCL's own converter, the entry's messages as they are.
Our agent renders and parses them in its training format; its calls become BFCL's decoded form
`[{name: {arg: value}}]`, which BFCL's AST checker grades. Multi-turn entries run BFCL's loop
(up to 20 steps a turn, held-out functions added where the entry says) with the backends and the
checker in a sandbox process, since both `eval()` text built from model output.
"""

from __future__ import annotations

import ast
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustee_rl.evaluate.agent import Agent, Conversation
from trustee_rl.evaluate.bfcl_sandbox import MODEL_NAME, Sandbox, SandboxError
from trustee_rl.evaluate.results import (
    ResultCache,
    gather_bounded,
    read_summary,
    update_summary,
)
from trustee_rl.policy.hermes import format_tool_call, parse_assistant_text
from trustee_rl.schema import Message, Tool, ToolCall

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

Progress = Callable[[str, int, int], None]  # category, done, total


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


class Evaluation:
    """One model over some BFCL categories, resuming from the cache in `out`."""

    def __init__(
        self,
        agent: Agent,
        out: Path,
        *,
        progress: Progress | None = None,
        concurrency: int = 16,
    ) -> None:
        use_project_root(out)
        _register_model()
        self.agent = agent
        self.out = out
        self.cache = ResultCache(out)
        self.progress = progress
        self.concurrency = concurrency
        self.sandbox = Sandbox(out / "bfcl_sandbox")

    async def run(self, categories: list[str], limit: int | None) -> dict[str, Any]:
        try:
            figures: dict[str, dict[str, Any]] = {}
            for category in categories:
                figures[category] = await self.run_category(category, limit)
            return self.summarise(figures)
        finally:
            await self.sandbox.close()
            self.cache.close()

    async def run_category(self, category: str, limit: int | None) -> dict[str, Any]:
        entries = load_entries(category, limit)
        started = time.perf_counter()
        scores: dict[str, float] = {}
        todo: list[Entry] = []
        for entry in entries:
            cached = self.cache.get(self.agent.name, BENCHMARK, category, entry.id)
            if cached is None:
                todo.append(entry)
            else:
                scores[entry.id] = cached[0]
        self._report(category, len(scores), len(entries))
        grade = self._grade_multi_turn if category in MULTI_TURN else self._grade_single_turn

        async def score(entry: Entry) -> None:
            valid, record = await grade(entry)
            self.cache.put(self.agent.name, BENCHMARK, category, entry.id, float(valid), record)
            scores[entry.id] = float(valid)
            self._report(category, len(scores), len(entries))

        await gather_bounded(todo, self.concurrency, score)
        return {
            "accuracy": sum(scores.values()) / len(entries) if entries else 0.0,
            "entries": len(entries),
            "wall_s": round(time.perf_counter() - started, 1),
            "from_cache": len(entries) - len(todo),
        }

    def _report(self, category: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(category, done, total)

    # -- single-turn (AST and relevance) -------------------------------------------------------
    async def _grade_single_turn(self, entry: Entry) -> tuple[bool, dict[str, Any]]:
        conversation = Conversation(
            _messages(entry.data["question"][0]), bfcl_tools(entry.data["function"]), entry.id
        )
        reply = (await self.agent.respond([conversation]))[0]
        valid, detail = check_single_turn(entry, reply)
        return valid, {"reply": reply.model_dump(mode="json"), **detail}

    # -- multi-turn ------------------------------------------------------------------------------
    async def _grade_multi_turn(self, entry: Entry) -> tuple[bool, dict[str, Any]]:
        from bfcl_eval.constants.default_prompts import (
            DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC,
            MAXIMUM_STEP_LIMIT,
        )
        from bfcl_eval.model_handler.utils import convert_to_function_call

        functions = list(entry.data["function"])
        held_out: dict[str, list[dict[str, Any]]] = entry.data.get("missed_function", {})
        long_context = "long_context" in entry.category
        messages: list[Message] = []
        decoded: list[list[list[str]]] = []
        transcript: list[dict[str, Any]] = []
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
                    reply = (await self.agent.respond([Conversation(messages, tools, key)]))[0]
                    messages.append(reply)
                    transcript.append(
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
                    return False, {
                        "error": f"force-terminated: more than {MAXIMUM_STEP_LIMIT} steps in turn {turn}",
                        "transcript": transcript,
                    }
                decoded.append(turn_decoded)
            verdict = await self.sandbox.check(decoded, entry.answer, entry.data)
        except SandboxError as error:
            return False, {"error": f"sandbox: {error}", "transcript": transcript}
        return bool(verdict["valid"]), {
            "error": None if verdict["valid"] else verdict.get("error_message", verdict),
            "transcript": transcript,
        }

    # -- summary ---------------------------------------------------------------------------------
    def summarise(self, figures: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """This run's categories, merged over those earlier runs into `out` evaluated."""
        earlier = read_summary(self.out).get("benchmarks", {}).get(BENCHMARK, {})
        merged = {
            category: row
            for category, row in (earlier.get("categories", {}) | figures).items()
            if category in CATEGORIES
        }
        merged = {category: merged[category] for category in CATEGORIES if category in merged}
        summary = {
            "scores": {category: row["accuracy"] for category, row in merged.items()}
            | {f"{name} (overall)": value for name, value in bfcl_groups(merged).items()},
            "categories": merged,
        }
        update_summary(self.out, self.agent.name, BENCHMARK, summary)
        return summary


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


class GroundTruthAgent:
    """Replays BFCL's ground truth as if a model wrote it: the first allowed value of every
    argument, written as `<tool_call>` text and read back by the training parser. Scoring 100%
    proves the plumbing (rendering, parsing, decoding, checking), not a model."""

    name = "bfcl-ground-truth"

    def __init__(self, entries: list[Entry]) -> None:
        self.replies: dict[str, str] = {}
        for entry in entries:
            if entry.category in MULTI_TURN:
                functions = entry.data["function"] + [
                    function
                    for added in entry.data.get("missed_function", {}).values()
                    for function in added
                ]
                order = {f["name"]: list(f["parameters"]["properties"]) for f in functions}
                for turn, calls in enumerate(entry.answer):
                    self.replies[f"{entry.id}:{turn}:0"] = "".join(
                        format_tool_call(parse_call_text(call, order)) for call in calls
                    )
            elif entry.answer is not None:
                docs = {function["name"]: function for function in entry.checked_functions}
                language = entry.category.removeprefix("simple_")
                language = language if language in ("java", "javascript") else "python"
                calls = [
                    ToolCall(
                        name=name.replace(".", "_"),
                        arguments=first_choice_arguments(options, docs[name], language),
                    )
                    for answer in entry.answer
                    for name, options in answer.items()
                ]
                self.replies[entry.id] = "".join(format_tool_call(call) for call in calls)
            elif entry.category == "live_relevance":  # no ground truth: any call is right
                first = bfcl_tools(entry.data["function"])[0]
                self.replies[entry.id] = format_tool_call(ToolCall(name=first.name))

    async def respond(self, conversations: Sequence[Conversation]) -> list[Message]:
        replies = []
        for conversation in conversations:
            # Irrelevance entries, and multi-turn steps after a turn's calls, get plain text.
            text = self.replies.get(conversation.key, "")
            content, calls = parse_assistant_text(text)
            replies.append(Message(role="assistant", content=content or "Done.", tool_calls=calls))
        return replies

    async def aclose(self) -> None:
        return None


def first_choice_arguments(
    options: dict[str, list[Any]], doc: dict[str, Any], language: str = "python"
) -> dict[str, Any]:
    """One call from BFCL's possible answers and the function's doc: each documented argument's
    first allowed value; an argument allowed to be absent ("") is left out unless the doc says it
    is required. Java and JavaScript values are written as the source text BFCL asks for."""
    properties = doc["parameters"].get("properties", {})
    required = set(doc["parameters"].get("required", []))
    arguments = {}
    for name, allowed in options.items():
        present = [value for value in allowed if value != ""]
        if name not in properties or not present or (name not in required and allowed[0] == ""):
            continue
        value = _resolve_choice(present[0])
        if language != "python":
            value = source_literal(value, properties[name], language)
        arguments[name] = value
    return arguments


def _resolve_choice(value: Any) -> Any:
    # BFCL's dict checker reads one level: a dict's values are lists of allowed literals.
    if isinstance(value, dict):
        return {
            key: (allowed[0] if isinstance(allowed, list) else allowed)
            for key, allowed in value.items()
            if not (isinstance(allowed, list) and (not allowed or allowed[0] == ""))
        }
    if isinstance(value, list):
        return [_resolve_choice(item) for item in value]
    return value


def source_literal(value: Any, doc: dict[str, Any], language: str) -> str:
    """`value` as Java or JavaScript source, in the forms BFCL's type converters read."""
    kind = doc.get("type", "any")
    items = doc.get("items", {})
    if isinstance(value, str):  # already source text, as BFCL writes most Java and JS answers
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if language == "java":
        if kind == "long":
            return f"{value}L"
        if kind == "float":
            return f"{value}f"
        if kind == "char":
            return f"'{value}'"
        if kind == "Array":
            return (
                "new Object[]{" + ", ".join(source_literal(v, items, language) for v in value) + "}"
            )
        if kind == "ArrayList":
            quote = '"' if items.get("type") == "String" else ""
            inner = ", ".join(f"{quote}{source_literal(v, items, language)}{quote}" for v in value)
            return f"new ArrayList<>(Arrays.asList({inner}))"
        if kind == "HashMap":
            puts = " ".join(f'put("{k}", {json.dumps(v)});' for k, v in value.items())
            return "new HashMap<String, Object>() {{ " + puts + " }}"
        return str(value)
    if kind == "Bigint":
        return f"{value}n"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def parse_call_text(text: str, parameter_order: dict[str, list[str]]) -> ToolCall:
    """A multi-turn ground-truth call, written as Python call text, as a ToolCall; positional
    arguments, as in `sort('final_report.pdf')`, are named in the order of the function's doc."""
    node = ast.parse(text, mode="eval").body
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise ValueError(f"not a plain function call: {text!r}")
    name = node.func.id
    positional = dict(
        zip(parameter_order[name], (ast.literal_eval(arg) for arg in node.args), strict=False)
    )
    named = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
    return ToolCall(name=name, arguments=positional | named)
