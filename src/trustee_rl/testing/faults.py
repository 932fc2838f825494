"""A loopback OpenAI-compatible server that misbehaves on purpose, to show that clients and the
simulation loop survive faulty servers without losing episodes or inventing rewards.

Each chat request meets at most one fault, drawn from a stream seeded once per server:

  malformed     (requests for JSON only) the content is not the JSON asked for: prose, or cut short
  truncated     the response body is cut short (well-formed HTTP, unreadable JSON)
  error         HTTP 500
  rate_limited  HTTP 429 with a Retry-After header (seconds, or an HTTP date)
  hang          no answer for `hang_s` (past the client's timeout), then the connection closes
  drop          the connection closes without an answer

Run one in the foreground with
`python -m trustee_rl.testing.faults --agent --malformed 0.3 --error 0.05 --hang 0.02 --hang-s 3`.
`tally_run` reads back what a run against it left in its store (benchmarks/faults.py prints it).
"""

from __future__ import annotations

import argparse
import email.utils
import json
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from trustee_rl.lm.serve import write_json
from trustee_rl.schema import Episode, Verdict
from trustee_rl.store import RunStore
from trustee_rl.testing.openai_server import (
    LoopbackOpenAIServer,
    Responder,
    add_server_arguments,
    is_structured,
    serve_until_interrupted,
    server_options,
)

__all__ = [
    "FAULTS",
    "TRANSPORT_FAULTS",
    "FaultShares",
    "FaultyOpenAIServer",
    "RunTally",
    "tally_run",
]

TRANSPORT_FAULTS = ("truncated", "error", "rate_limited", "hang", "drop")
FAULTS = ("malformed", *TRANSPORT_FAULTS)
_NOT_JSON = "Sorry, I lost my train of thought there."
# What an unscored reason says when a call failed in transport, not for what the model wrote:
# the runner's words for a failed policy call (it asks for no JSON), and OpenAIHTTPLM's once its
# retries ran out.
_TRANSPORT_FAILED = ("policy failed:", "gave up after")


@dataclass(frozen=True)
class FaultShares:
    """The share of chat requests each fault hits. The transport faults are shares of every
    request (together at most 1); `malformed` is a share of the requests for JSON that get past them."""

    malformed: float = 0.0
    truncated: float = 0.0
    error: float = 0.0
    rate_limited: float = 0.0
    hang: float = 0.0
    drop: float = 0.0

    def __post_init__(self) -> None:
        for field in fields(self):
            share = getattr(self, field.name)
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"fault share {field.name}={share} is not between 0 and 1")
        if self.transport > 1.0:
            raise ValueError(f"transport fault shares add up to {self.transport:g}, over 1")

    @classmethod
    def spread(cls, *, malformed: float, transport: float) -> FaultShares:
        """`malformed`, and `transport` split evenly over the transport faults."""
        each = transport / len(TRANSPORT_FAULTS)
        return cls(malformed, **{name: each for name in TRANSPORT_FAULTS})

    @property
    def transport(self) -> float:
        return float(sum(getattr(self, name) for name in TRANSPORT_FAULTS))


class FaultyOpenAIServer(LoopbackOpenAIServer):
    """`LoopbackOpenAIServer` with faults injected by `shares`, drawn from `seed`; `script` names
    the faults (None for none) of the first requests in order, before the draws take over.
    `injected` counts the faults served."""

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        shares: FaultShares,
        seed: int = 0,
        script: Sequence[str | None] = (),
        hang_s: float = 30.0,
        retry_after_s: float = 1.0,
        retry_after_date: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(responder, **options)
        unknown = sorted({name for name in script if name is not None} - set(FAULTS))
        if unknown:
            raise ValueError(f"unknown faults {unknown}; known: {', '.join(FAULTS)}")
        self.shares = shares
        self.hang_s = hang_s
        self.retry_after_s = retry_after_s
        self.retry_after_date = retry_after_date
        self.injected: Counter[str] = Counter()
        self._script = deque(script)
        self._rng = random.Random(seed)
        self._lock_draws = threading.Lock()
        # Set on stop, so requests left hanging end with the server.
        self._stopping = threading.Event()

    def start(self) -> None:
        self._stopping.clear()
        super().start()

    def stop(self) -> None:
        self._stopping.set()
        super().stop()

    def respond(self, handler: BaseHTTPRequestHandler, request: dict[str, Any]) -> None:
        fault = self._draw(request)
        if fault in ("malformed", "truncated", None):
            status, payload = self.answer(request)
            if status != 200 or fault is None:
                write_json(handler, status, payload)
                return
            self._count(fault)
            if fault == "malformed":
                write_json(handler, status, self._malformed(payload))
            else:
                _write_truncated(handler, payload)
            return
        self.record(request)
        self._count(fault)
        if fault == "error":
            write_json(handler, 500, {"error": {"message": "injected fault: internal error"}})
        elif fault == "rate_limited":
            body = {"error": {"message": "injected fault: rate limited"}}
            write_json(handler, 429, body, {"Retry-After": self._retry_after()})
        else:  # a hang, then a drop, or a drop at once: the connection closes without an answer
            if fault == "hang":
                self._stopping.wait(self.hang_s)
            handler.close_connection = True

    def _draw(self, request: dict[str, Any]) -> str | None:
        with self._lock_draws:
            if self._script:
                return self._script.popleft()
            roll, malformed_roll = self._rng.random(), self._rng.random()
        edge = 0.0
        for name in TRANSPORT_FAULTS:
            edge += getattr(self.shares, name)
            if roll < edge:
                return name
        if is_structured(request) and malformed_roll < self.shares.malformed:
            return "malformed"
        return None

    def _malformed(self, payload: dict[str, Any]) -> dict[str, Any]:
        """`payload` with its content turned to prose, or cut in half, at even odds."""
        with self._lock_draws:
            as_prose = self._rng.random() < 0.5
        message = payload["choices"][0]["message"]
        content = message.get("content") or ""
        broken = _NOT_JSON if as_prose else content[: len(content) // 2]
        choice = {**payload["choices"][0], "message": {**message, "content": broken}}
        return {**payload, "choices": [choice]}

    def _count(self, fault: str) -> None:
        with self._lock_draws:
            self.injected[fault] += 1

    def _retry_after(self) -> str:
        if self.retry_after_date:
            return email.utils.formatdate(time.time() + self.retry_after_s, usegmt=True)
        # Whole seconds by the standard; a fraction keeps tests fast, and OpenAIHTTPLM reads it.
        return f"{self.retry_after_s:g}"


def _write_truncated(handler: BaseHTTPRequestHandler, payload: dict[str, Any]) -> None:
    data = json.dumps(payload).encode()
    cut = data[: len(data) // 2]
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(cut)))
    handler.end_headers()
    handler.wfile.write(cut)


@dataclass(frozen=True)
class RunTally:
    """What a run under injected faults left in its store. `lost`, `aborted` (episodes ended by a
    call that failed in transport: a fault the client's retries did not absorb) and `invented`
    (scored although the LM judge gave no answer) must all be 0. Malformed content that outlasts
    a simulator's tries leaves its episode unscored, under its reason."""

    requested: int
    stored: int
    scored: int
    unscored_by_reason: dict[str, int]
    lost: int
    aborted: int
    invented: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def tally_run(run_dir: Path, requested: int) -> RunTally:
    with RunStore.open(run_dir, readonly=True) as store:
        judged_by_lm = store.config.get("judge", {}).get("mode") == "lm"
        verdicts = {verdict.episode_id: verdict for verdict in store.verdicts()}
        episodes = [e for e in store.episodes() if e.id in verdicts and e.status != "running"]
    reasons: Counter[str] = Counter()
    aborted = invented = 0
    for episode in episodes:
        verdict = verdicts[episode.id]
        if verdict.scored:
            if judged_by_lm and not _judged(episode, verdict):
                invented += 1
            continue
        reason = verdict.unscored_reason or episode.end_reason or "no reason given"
        # The reason's head ("simulator failed: tool simulator gave no valid output in 3 tries").
        reasons[": ".join(reason.split(": ")[:2])] += 1
        if any(mark in reason for mark in _TRANSPORT_FAILED):
            aborted += 1
    return RunTally(
        requested=requested,
        stored=len(episodes),
        scored=sum(verdicts[e.id].scored for e in episodes),
        unscored_by_reason=dict(reasons.most_common()),
        lost=requested - len({e.index for e in episodes}),
        aborted=aborted,
        invented=invented,
    )


def _judged(episode: Episode, verdict: Verdict) -> bool:
    """Whether the LM judge answered for this episode and its answer is in the verdict."""
    answered = any(c.role == "judge" and c.error is None and c.output for c in episode.sim_calls)
    return answered and any(c.source == "judge" for c in verdict.criteria)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Serve a loopback OpenAI-compatible chat API that injects faults."
    )
    add_server_arguments(parser)
    for name in FAULTS:
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=float, default=0.0, help=f"share of {name} answers"
        )
    parser.add_argument("--hang-s", type=float, default=30.0, help="how long a hang lasts")
    parser.add_argument("--retry-after", type=float, default=1.0, help="seconds a 429 asks for")
    parser.add_argument(
        "--retry-after-date", action="store_true", help="send Retry-After as an HTTP date"
    )
    args = parser.parse_args(argv)
    try:
        shares = FaultShares(**{name: getattr(args, name) for name in FAULTS})
    except ValueError as error:
        parser.error(str(error))
    server = FaultyOpenAIServer(
        shares=shares,
        seed=args.seed,
        hang_s=args.hang_s,
        retry_after_s=args.retry_after,
        retry_after_date=args.retry_after_date,
        **server_options(args),
    )
    serve_until_interrupted(server)


if __name__ == "__main__":
    main()
