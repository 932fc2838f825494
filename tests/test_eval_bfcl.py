"""`trustee eval bfcl`: BFCL's own data and checkers through our rendering, parsing and decoding."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from trustee_rl.cli import app
from trustee_rl.evaluate import bfcl
from trustee_rl.evaluate.bfcl_sandbox import Sandbox, SandboxError
from trustee_rl.policy.base import Conversation
from trustee_rl.testing.bfcl_truth import GroundTruthPolicy
from trustee_rl.testing.openai_server import LoopbackOpenAIServer, Reply

runner = CliRunner()

# Entries whose ground truth contradicts BFCL's own function doc or type converter, so that no
# output passes BFCL's checker: a required parameter with no allowed value, an answer naming a
# parameter the doc lacks, a list of strings whose answer holds booleans and numbers, a string
# answer stored as a list of characters.
UNPASSABLE = {
    "live_multiple_507-149-4",
    "live_multiple_964-207-0",
    "simple_java_36",
    "simple_java_64",
    "simple_java_65",
    "live_simple_106-63-0",
    "live_simple_112-68-0",
    "live_multiple_862-181-3",
}


def ground_truth_run(out: Path, categories: list[str], limit: int | None) -> dict[str, Any]:
    bfcl.use_project_root(out)
    entries = [entry for category in categories for entry in bfcl.load_entries(category, limit)]
    policy = GroundTruthPolicy(entries)
    return asyncio.run(bfcl.evaluate_bfcl(policy, out, categories, limit))


def failures(out: Path) -> set[str]:
    with sqlite3.connect(out / "results.sqlite") as db:
        return {row[0] for row in db.execute("SELECT entry FROM results WHERE score = 0")}


def test_ground_truth_passes_every_ast_entry_through_our_parser_and_bfcls_checker(
    tmp_path: Path,
) -> None:
    summary = ground_truth_run(tmp_path, bfcl.AST, None)
    assert failures(tmp_path) == UNPASSABLE
    for category in bfcl.AST:
        row = summary["categories"][category]
        unpassable = sum(entry.startswith(category + "_") for entry in UNPASSABLE)
        assert row["entries"] > 10
        assert row["accuracy"] == pytest.approx(1 - unpassable / row["entries"])


def test_relevance_categories_reward_exactly_the_right_silence(tmp_path: Path) -> None:
    summary = ground_truth_run(tmp_path, ["irrelevance", "live_irrelevance", "live_relevance"], 30)
    assert summary["scores"]["irrelevance"] == 1.0
    assert summary["scores"]["live_irrelevance"] == 1.0
    assert summary["scores"]["live_relevance"] == 1.0
    assert summary["scores"]["hallucination (overall)"] == 1.0


def test_multi_turn_ground_truth_runs_through_the_sandboxed_backends(tmp_path: Path) -> None:
    summary = ground_truth_run(tmp_path, bfcl.MULTI_TURN, 4)
    assert summary["scores"] == {category: 1.0 for category in bfcl.MULTI_TURN} | {
        "multi_turn (overall)": 1.0
    }


def test_results_are_cached_and_a_rerun_resumes(tmp_path: Path) -> None:
    ground_truth_run(tmp_path, ["simple_python"], 5)
    again = ground_truth_run(tmp_path, ["simple_python"], 8)
    assert again["categories"]["simple_python"]["from_cache"] == 5
    with sqlite3.connect(tmp_path / "results.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 8


def test_a_wrong_call_fails_bfcls_checker(tmp_path: Path) -> None:
    bfcl.use_project_root(tmp_path)
    entry = bfcl.load_entries("simple_python", 1)[0]
    policy = GroundTruthPolicy([entry])
    right = asyncio.run(policy.act([Conversation([], [], key=entry.id)]))[0]
    assert bfcl.check_single_turn(entry, right)[0]
    wrong = right.model_copy(deep=True)
    name = next(iter(wrong.tool_calls[0].arguments))
    wrong.tool_calls[0].arguments[name] = "certainly not this"
    valid, detail = bfcl.check_single_turn(entry, wrong)
    assert not valid and detail["error"]["type"]
    silent = right.model_copy(update={"tool_calls": []})
    assert bfcl.check_single_turn(entry, silent) == (
        False,
        {"error": "no function call in the reply"},
    )


def test_sandbox_runs_model_text_in_another_process_and_survives_its_failures(
    tmp_path: Path,
) -> None:
    entry = bfcl.load_entries("multi_turn_base", 1)[0].data

    async def scenario() -> None:
        sandbox = Sandbox(tmp_path / "sandbox")
        try:
            listing = await sandbox.execute(["ls()"], entry, long_context=False)
            assert "current_directory_content" in listing[0]
            pid = await sandbox.execute(["__import__('os').getpid()"], entry, long_context=False)
            assert int(pid[0]) != os.getpid()
            # Memory beyond the sandbox's limit fails the call, not the evaluator.
            hog = await sandbox.execute(["ls(a=bytearray(8 << 30))"], entry, long_context=False)
            assert hog[0].startswith("Error during execution")
            with pytest.raises(SandboxError, match="unknown op"):
                await sandbox.request({"op": "nonsense"})
            # Text that kills the sandbox fails its request; the next request gets a new sandbox.
            with pytest.raises(SandboxError, match="died"):
                await sandbox.execute(["__import__('os')._exit(3)"], entry, long_context=False)
            assert "current_directory_content" in (await sandbox.execute(["ls()"], entry, False))[0]
        finally:
            await sandbox.close()

    asyncio.run(scenario())


def test_url_model_is_asked_with_bfcls_tools_and_scored(tmp_path: Path) -> None:
    """A model behind an OpenAI-compatible server: native tool calls in, BFCL verdicts out."""
    bfcl.use_project_root(tmp_path)
    entries = bfcl.load_entries("simple_python", 3)
    truth = GroundTruthPolicy(entries)
    requests: list[dict[str, Any]] = []

    answers = {}
    for entry in entries[:2]:
        reply = asyncio.run(truth.act([Conversation([], [], key=entry.id)]))[0]
        calls = [{"name": c.name, "arguments": c.arguments} for c in reply.tool_calls]
        answers[calls[0]["name"]] = Reply(tool_calls=calls)

    def respond(request: dict[str, Any]) -> Reply:
        requests.append(request)
        offered = request["tools"][0]["function"]["name"]
        # The third entry gets prose, which BFCL scores as a miss.
        return answers.get(offered, Reply(content="I would rather not."))

    with LoopbackOpenAIServer(respond) as server:
        result = runner.invoke(
            app,
            ["eval", "bfcl", "--model", server.base_url, "--categories", "simple_python",
             "--limit", "3", "--out", str(tmp_path), "--json"],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["scores"]["simple_python"] == pytest.approx(2 / 3)
    assert len(requests) == 3
    assert all(r["tools"] and r["temperature"] == 0 for r in requests)
    offered = {t["function"]["name"] for r in requests for t in r["tools"]}
    assert offered == {"calculate_triangle_area", "math_factorial", "math_hypot"}


def test_bad_categories_are_refused_and_online_ones_skipped_with_a_reason(tmp_path: Path) -> None:
    unknown = runner.invoke(
        app, ["eval", "bfcl", "--model", "embedded", "--categories", "simple_cobol"]
    )
    assert unknown.exit_code == 2
    assert "unknown BFCL category 'simple_cobol'" in unknown.output
    online = runner.invoke(
        app, ["eval", "bfcl", "--model", "embedded", "--categories", "web_search_base"]
    )
    assert online.exit_code == 2
    assert "skipped web_search_base: it searches the live web" in online.output
    assert "no offline BFCL category left" in online.output


@pytest.mark.embedded
def test_embedded_model_on_twenty_simple_python_entries_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "base"
    args = ["eval", "bfcl", "--model", "embedded", "--categories", "simple_python",
            "--limit", "20", "--out", str(out), "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    row = summary["categories"]["simple_python"]
    assert row["entries"] == 20 and 0.0 <= row["accuracy"] <= 1.0
    with sqlite3.connect(out / "results.sqlite") as db:
        rows = [(s, json.loads(r)) for s, r in db.execute("SELECT score, record FROM results")]
    assert len(rows) == 20
    # Every reply was generated and parsed; a pass has no error, and each failure says why.
    assert all(record["reply"]["role"] == "assistant" for _, record in rows)
    assert all((score == 1.0) == (not record["error"]) for score, record in rows)
    assert sum(score for score, _ in rows) == pytest.approx(20 * row["accuracy"])
    again = runner.invoke(app, args)
    assert json.loads(again.stdout)["categories"]["simple_python"]["from_cache"] == 20
    assert json.loads(again.stdout)["scores"] == summary["scores"]
