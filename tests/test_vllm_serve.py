"""A real vLLM server, serving a checkpoint saved the way training saves one, as the policy and the
simulator of `trustee simulate`, and its Hermes tool parser answering our HTTP client.

The tests marked `vllm` are skipped where vLLM is not installed (`bash scripts/setup.sh --vllm`;
its CPU build runs here); `-m "not vllm"` leaves them out. One server for the module. On 2 CPU cores shared with other work the
module took 8 to 14 minutes: 2 to 4 to start the server, 5 to 10 for the 8 episodes.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from trustee_rl.cli import app
from trustee_rl.lm.openai_http import OpenAIHTTPLM
from trustee_rl.lm.vllm_server import VLLMServer, VLLMStartError
from trustee_rl.schema import Message, ToolCall
from trustee_rl.store import RunStore

from .conftest import WEATHER

needs_vllm = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason="vLLM is not installed (bash scripts/setup.sh --vllm)",
)

# uvicorn's access log line: "POST /v1/chat/completions HTTP/1.1" 200 OK
ACCESS = re.compile(r'"(GET|POST) (\S+) HTTP/[\d.]+" (\d{3})')


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded model saved as training saves a checkpoint: with the tool-aware template."""
    from trustee_rl.policy.model import load_policy, save_policy

    model, tokenizer = load_policy("embedded")
    return save_policy(model, tokenizer, tmp_path_factory.mktemp("checkpoint"))


@pytest.fixture(scope="module")
def server(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    with VLLMServer(checkpoint, dtype="float32", cpu_kv_cache_gib=2, log_path=log) as running:
        yield running


def answered(server: VLLMServer) -> Counter[tuple[str, int]]:
    """Requests the server answered, by path and status, from its access log."""
    text = server.log_path.read_text(encoding="utf-8", errors="replace")
    return Counter((path, int(status)) for _, path, status in ACCESS.findall(text))


def demonstrated_call(city: str) -> list[Message]:
    """Two earlier requests each answered by a call: the 135M base model then calls too."""
    messages = [Message(role="system", content="You are a weather assistant.")]
    for number, asked in enumerate(("Paris", "Rome", city)):
        messages.append(Message(role="user", content=f"Weather in {asked}?"))
        if asked != city:
            call = ToolCall(id=f"call_{number}", name="get_weather", arguments={"city": asked})
            messages.append(Message(role="assistant", tool_calls=[call]))
    return messages


def test_serve_refuses_a_dir_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["serve", str(tmp_path)])
    assert result.exit_code == 2
    assert (
        result.output.strip()
        == f"error: not a Hugging Face checkpoint dir (no config.json): {tmp_path}"
    )


@pytest.mark.vllm
@needs_vllm
def test_a_server_that_exits_at_start_is_reported_with_its_log(checkpoint: Path) -> None:
    server = VLLMServer(checkpoint, extra_args=["--no-such-flag"])
    with pytest.raises(VLLMStartError) as raised:
        server.start()
    assert raised.value.summary == f"vLLM exited with status 2 before serving {checkpoint}"
    assert "unrecognized arguments: --no-such-flag" in raised.value.log_tail


@pytest.mark.vllm
@needs_vllm
async def test_the_hermes_parser_hands_our_client_a_parsed_call(server: VLLMServer) -> None:
    lm = OpenAIHTTPLM(server.base_url)
    try:
        completion = await lm.complete(
            [message.to_openai() for message in demonstrated_call("Oslo")],
            tools=[WEATHER.to_openai()],
            max_tokens=64,
            temperature=0.0,
        )
    finally:
        await lm.aclose()
    assert [(call.name, call.arguments) for call in completion.tool_calls] == [
        ("get_weather", {"city": "Oslo"})
    ]
    assert completion.finish_reason == "tool_calls"
    assert "<tool_call>" not in completion.text  # parsed out of the text, not left in it
    assert lm.model == "trustee"
    assert answered(server)[("/v1/chat/completions", 200)] >= 1


@pytest.mark.vllm
@needs_vllm
async def test_a_seeded_prompt_longer_than_one_prefill_step_is_served(server: VLLMServer) -> None:
    """vLLM's CPU build crashes on this unless each prompt is prefilled whole (vllm_server.py)."""
    lm = OpenAIHTTPLM(server.base_url, max_retries=0)
    long_text = " ".join(f"item{number}" for number in range(1200))
    try:
        completion = await lm.complete(
            [{"role": "user", "content": f"Repeat the last item: {long_text}"}],
            max_tokens=8,
            temperature=0.7,
            seed=7,
        )
    finally:
        await lm.aclose()
    assert completion.usage.prompt_tokens > 2048  # more than the CPU build's step of tokens
    assert completion.usage.completion_tokens >= 1
    assert httpx.get(f"{server.base_url}/models").status_code == 200


@pytest.mark.vllm
@needs_vllm
def test_simulate_with_vllm_as_policy_and_simulator(server: VLLMServer, tmp_path: Path) -> None:
    before = answered(server)
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--run-dir",
            str(run_dir),
            "--policy",
            server.base_url,
            "--simulator",
            server.base_url,
            "--episodes",
            "8",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["episodes"] == 8

    with RunStore.open(run_dir, readonly=True) as store:
        episodes = store.episodes()
        verdicts = {verdict.episode_id: verdict for verdict in store.verdicts()}
    assert len(episodes) == 8 and set(verdicts) == {episode.id for episode in episodes}
    scored = [verdicts[episode.id] for episode in episodes if verdicts[episode.id].scored]
    assert scored, [verdict.unscored_reason for verdict in verdicts.values()]
    for verdict in scored:
        assert verdict.reward is not None
        # The rubric was judged by the served model, beside the rules.
        assert {criterion.source for criterion in verdict.criteria} == {"rule", "judge"}
    for episode in episodes:
        verdict = verdicts[episode.id]
        if not verdict.scored:  # a simulator output the 135M model got wrong, not the transport
            assert verdict.unscored_reason and "HTTP" not in verdict.unscored_reason
        else:
            assert any(message.role == "assistant" for message in episode.messages)

    # Every request was answered as sent: tools with tool_choice, and response_format.
    during = answered(server) - before
    assert {status for _, status in during} == {200}
    calls = sum(len(e.sim_calls) + sum(m.role == "assistant" for m in e.messages) for e in episodes)
    assert during[("/v1/chat/completions", 200)] >= calls
