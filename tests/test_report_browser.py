"""Model text in a report stays text in a real browser: headless Chromium runs none of it.

Every text field of a run store is filled with markup that, if a browser ever parsed it as markup,
would set the page title to a marker and make requests to a listener on 127.0.0.1. The marker is
written in the payload as two concatenated halves, so it can only appear in the page if a payload
ran. A control page that pastes the same text in raw proves that the probe would notice.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from trustee_rl.report import write_report
from trustee_rl.schema import (
    CriterionResult,
    Episode,
    ForbiddenRule,
    Message,
    RubricItem,
    SimCall,
    ToolCall,
    Verdict,
)
from trustee_rl.store import RunStore

from .conftest import make_task

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MARKER = "payload-ran"
# Elements the report never has, each of which loads or runs something.
FETCHING_TAGS = {"img", "iframe", "link", "object", "embed", "base"}
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not found (Debian: apt-get install chromium)"
)


def payload(beacon: str) -> str:
    """Markup in every form that could run or fetch something if it were not escaped."""
    run = f"document.title='payload'+'-ran';fetch('{beacon}/script')"
    return " ".join(
        [
            f"<script>{run}</script>",
            f'<img src=x onerror="{run}">',
            f'"><svg onload="{run}"></svg>',
            f'\'><body onload="{run}">',
            f'<a href="javascript:{run}">click me</a>',
            f"</script><script>{run}</script>",
            f'</pre></details><iframe srcdoc="<script>{run}</script>"></iframe>',
            f'<img src="{beacon}/img">',
            f'<link rel="stylesheet" href="{beacon}/link">',
            f"<style>@import url({beacon}/style);</style>",
            f'<meta http-equiv="refresh" content="0;url={beacon}/refresh">',
        ]
    )


def build_store(run_dir: Path, text: str) -> None:
    """One judged and one unscored episode whose every text field carries `text`."""
    task = make_task(
        domain=text,
        goal=text,
        system_prompt=text,
        private_facts={"note": text},
        forbidden=[ForbiddenRule(description=text)],
        rubric=[RubricItem(id="report", description=text)],
    )
    call = ToolCall(id="call_1", name=text, arguments={"query": text, "html": f"</script>{text}"})
    messages = [
        Message(role="system", content=text),
        Message(role="user", content=text),
        Message(role="assistant", content=text, tool_calls=[call]),
        Message(role="tool", tool_call_id="call_1", name=text, content=json.dumps({"html": text})),
        Message(role="assistant", content=text),
    ]
    simulated = SimCall(
        role="tool",
        model=text,
        prompt_version=text,
        messages=[{"role": "user", "content": text}],
        output=json.dumps({"result": text}),
        error=text,
    )
    verdicts = [
        Verdict(
            episode_id="ep_0",
            scored=True,
            reward=1.0,
            criteria=[
                CriterionResult(name=text, passed=True, reason=text, source="judge", score=1)
            ],
            judge_model=text,
            prompt_version=text,
        ),
        Verdict.unscored("ep_1", text, text, text),
    ]
    with RunStore.create(run_dir, {"policy": text, "simulator": text}) as store:
        store.save_task(task)
        for index, verdict in enumerate(verdicts):
            episode = Episode(
                id=f"ep_{index}",
                task_id=task.id,
                index=index,
                seed=index,
                policy_model=text,
                messages=messages,
                sim_calls=[simulated],
                status="done",
                end_reason=text,
            )
            store.save_episode(episode, verdict)
        store.log_metrics(0, {text: 1.0, "reward_mean": 0.5})


class _Beacon(BaseHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # no stderr noise
        pass


@pytest.fixture
def beacon() -> Iterator[tuple[str, list[str]]]:
    """A listener on 127.0.0.1 that records every request a page makes to it."""
    requests: list[str] = []
    handler = type("Beacon", (_Beacon,), {"requests": requests})
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}", requests
        finally:
            server.shutdown()
            thread.join(timeout=5)


@dataclass
class Element:
    tag: str
    attributes: dict[str, str]


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: list[Element] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(Element(tag, {name: value or "" for name, value in attrs}))


def elements(dom: str) -> list[Element]:
    parser = _Elements()
    parser.feed(dom)
    return parser.elements


def injected(dom: str) -> list[str]:
    """What in the DOM only markup from the store could have put there."""
    found = []
    for element in elements(dom):
        active = [
            name
            for name, value in element.attributes.items()
            if name.startswith("on") or value.strip().lower().startswith("javascript:")
        ]
        if active:
            found.append(f"<{element.tag}> with {active}")
        if element.tag in FETCHING_TAGS or (
            element.tag == "meta" and "http-equiv" in element.attributes
        ):
            found.append(f"<{element.tag}>")
    for tag in ("script", "style"):  # the report has one of each, its own
        count = sum(element.tag == tag for element in elements(dom))
        if count != 1:
            found.append(f"{count} <{tag}> elements")
    return found


def dump_dom(page: Path, profile: Path) -> str:
    """The DOM after the page loaded and its scripts ran, as headless Chromium serialises it."""
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=2000",
        f"--user-data-dir={profile}",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    if os.geteuid() == 0:
        command.insert(1, "--no-sandbox")  # Chromium's own sandbox refuses to run as root
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=120, check=False,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(profile)},
    )  # fmt: skip
    assert "</html>" in result.stdout, result.stderr[-2000:]
    return result.stdout


def test_probe_notices_markup_that_runs(tmp_path: Path, beacon: tuple[str, list[str]]) -> None:
    """The control: the same text pasted in raw does run, so the real test can fail."""
    url, requests = beacon
    raw = tmp_path / "raw.html"
    raw.write_text(f"<!DOCTYPE html><html><body><pre>{payload(url)}</pre></body></html>")
    dom = dump_dom(raw, tmp_path / "profile")
    assert MARKER in dom
    assert {"/script", "/img", "/link", "/style"} <= set(requests)
    assert injected(dom)


def test_report_of_hostile_model_text_runs_none_of_it(
    tmp_path: Path, beacon: tuple[str, list[str]]
) -> None:
    url, requests = beacon
    text = payload(url)
    build_store(tmp_path / "run", text)
    report = write_report(tmp_path / "run")
    dom = dump_dom(report, tmp_path / "profile")
    assert 'id="ep-count" class="muted">2 of 2 shown<' in dom  # the report's own script ran
    assert dom.count("click me") >= 10  # the payload is on the page, as text
    assert MARKER not in dom
    assert requests == []
    assert injected(dom) == []
