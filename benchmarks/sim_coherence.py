"""How often does the simulator write text no real customer would? Scores a run store, read-only.

For the records a run kept (what training sees) and for every simulator try (rejected ones
included), prints the share of incoherent texts per kind, with counts:
  openings with placeholders ("Hello [user]"), openings or goals that are not a sentence, openings
  and user turns in the assistant's voice, goals with placeholders, texts copying the writer's
  instructions (tries only), user turns with placeholders, user turns that repeat or copy an
  earlier turn, and user turns that do not answer an agent question about a private fact.
Openings are scored as written, without the stated details that task generation appends.
The detectors are trustee_rl.sim.coherence's, the ones the simulators retry on.

    python benchmarks/sim_coherence.py RUN_DIR [--examples 3] [--json]
    python benchmarks/sim_coherence.py RUN_DIR --simulate [--episodes 64] [--seed 0]

--simulate first runs (or resumes) `trustee simulate` into RUN_DIR on the embedded default
simulator and policy; one task per episode.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustee_rl.schema import Episode, Task
from trustee_rl.sim.coherence import (
    asked_facts,
    echo_problem,
    instruction_echo_problem,
    placeholder_problem,
    repetition_problem,
    sentence_problem,
    unanswered_problem,
    voice_problem,
)
from trustee_rl.store import RunStore

UNANSWERED = "user turns not answering (asked for a private fact)"


@dataclass
class Tally:
    """How many texts of one kind were looked at, and the incoherent ones with their reasons."""

    kind: str
    total: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)  # (text, reason)

    def add(self, text: str, reason: str | None) -> None:
        self.total += 1
        if reason is not None:
            self.bad.append((text, reason))

    def row(self) -> dict[str, Any]:
        share = len(self.bad) / self.total if self.total else None
        return {"kind": self.kind, "incoherent": len(self.bad), "total": self.total, "share": share}


class Scorer:
    """Tallies by kind, created on first use so the printed order is the order of the checks."""

    def __init__(self) -> None:
        self.tallies: dict[str, Tally] = {}

    def add(self, kind: str, text: str, reason: str | None) -> None:
        self.tallies.setdefault(kind, Tally(kind)).add(text, reason)


def score_records(tasks: list[Task], episodes: list[Episode]) -> Scorer:
    """The texts the run kept: each task's opening and goal, each simulated user turn."""
    scorer = Scorer()
    # Shown even when no agent asked for a private fact (low difficulties withhold none).
    unanswered = scorer.tallies.setdefault(UNANSWERED, Tally(UNANSWERED))
    for task in tasks:
        opening = as_written(task.initial_message)
        scorer.add("openings with placeholders", opening, placeholder_problem(opening))
        scorer.add("openings not a sentence", opening, sentence_problem(opening))
        scorer.add("openings in the assistant's voice", opening, voice_problem(opening))
        scorer.add("goals not a sentence", task.goal, sentence_problem(task.goal))
        scorer.add("goals with placeholders", task.goal, placeholder_problem(task.goal))
    by_id = {task.id: task for task in tasks}
    for episode in episodes:
        played = by_id.get(episode.task_id)
        if played is None:  # its task could not be written
            continue
        facts = played.private_facts
        for reply, question, earlier in user_turns(episode):
            scorer.add("user turns with placeholders", reply, placeholder_problem(reply))
            scorer.add(
                "user turns repeating or copying",
                reply,
                repetition_problem(reply) or echo_problem(reply, earlier),
            )
            scorer.add("user turns in the assistant's voice", reply, voice_problem(reply))
            if asked_facts(question, facts):
                # Only turns after a question about a private fact can fail to answer one.
                unanswered.add(f"{question} -> {reply}", unanswered_problem(question, reply, facts))
    return scorer


def score_tries(episodes: list[Episode]) -> Scorer:
    """Every simulator output, rejected tries included: how often the simulator itself errs."""
    scorer = Scorer()
    for call in (call for episode in episodes for call in episode.sim_calls):
        value = _json_object(call.output)
        if value is None:
            continue
        if call.role == "taskgen" and {"goal", "initial_message"} <= value.keys():
            opening, goal = str(value["initial_message"]), str(value["goal"])
            # The writer's instructions: the prompt's turns, not a rejected try fed back to it.
            prompt = " ".join(str(m.get("content", "")) for m in call.messages[:2])
            scorer.add("openings with placeholders", opening, placeholder_problem(opening))
            scorer.add("openings not a sentence", opening, sentence_problem(opening))
            scorer.add("openings in the assistant's voice", opening, voice_problem(opening))
            scorer.add(
                "openings copying the instructions",
                opening,
                instruction_echo_problem(opening, prompt),
            )
            scorer.add("goals not a sentence", goal, sentence_problem(goal))
            scorer.add("goals with placeholders", goal, placeholder_problem(goal))
            scorer.add(
                "goals copying the instructions", goal, instruction_echo_problem(goal, prompt)
            )
        elif call.role == "user" and "reply" in value:
            reply = str(value["reply"])
            scorer.add("user turns with placeholders", reply, placeholder_problem(reply))
            scorer.add("user turns repeating", reply, repetition_problem(reply))
            scorer.add("user turns in the assistant's voice", reply, voice_problem(reply))
    return scorer


def as_written(opening: str) -> str:
    """An opening without the "(key: value; ...)" details task generation appends to it, so the
    writer's own words are scored (a scrap followed by details would pass as a sentence)."""
    head, bracket, details = opening.rpartition(" (")
    if bracket and details.endswith(")") and ": " in details:
        return head
    return opening


def user_turns(episode: Episode) -> Iterator[tuple[str, str, list[str]]]:
    """Each simulated user turn (not the opening) with the agent's last words before it, as the
    user simulator saw them, and the user's earlier turns."""
    question = ""
    earlier: list[str] = []
    for message in episode.messages:
        if message.role == "assistant" and message.content:
            question = message.content
        elif message.role == "user":
            if earlier:
                yield message.content or "", question, list(earlier)
            earlier.append(message.content or "")


def _json_object(text: str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(text or "")
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def simulate(run_dir: Path, episodes: int, seed: int) -> None:
    command = [
        sys.executable,
        "-m",
        "trustee_rl.cli",
        "simulate",
        "--run-dir",
        str(run_dir),
        "--episodes",
        str(episodes),
        "--seed",
        str(seed),
    ]
    print("running: trustee", " ".join(command[4:]), file=sys.stderr)
    subprocess.run(command, check=True)


def print_table(title: str, scorer: Scorer, examples: int) -> None:
    print(f"\n{title}")
    print(f"  {'kind':<52} {'incoherent':>10} {'total':>6} {'share':>7}")
    for tally in scorer.tallies.values():
        row = tally.row()
        share = "n/a" if row["share"] is None else f"{100 * row['share']:.1f}%"
        print(f"  {tally.kind:<52} {row['incoherent']:>10} {row['total']:>6} {share:>7}")
        for text, reason in tally.bad[:examples]:
            print(f"      - {reason}: {_short(text)}")


def _short(text: str, limit: int = 110) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("run_dir", type=Path, help="a run store written by `trustee simulate`")
    parser.add_argument("--simulate", action="store_true", help="run `trustee simulate` first")
    parser.add_argument("--episodes", type=int, default=64, help="with --simulate [64]")
    parser.add_argument("--seed", type=int, default=0, help="with --simulate [0]")
    parser.add_argument("--examples", type=int, default=3, help="incoherent texts shown per kind")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.simulate:
        simulate(args.run_dir, args.episodes, args.seed)
    with RunStore.open(args.run_dir, readonly=True) as store:
        tasks, episodes = store.tasks(), store.episodes()
        config = store.config
    records, tries = score_records(tasks, episodes), score_tries(episodes)
    if args.json:
        figures = {
            "run_dir": str(args.run_dir),
            "simulator": config.get("simulator"),
            "tasks": len(tasks),
            "episodes": len(episodes),
            "records": [tally.row() for tally in records.tallies.values()],
            "tries": [tally.row() for tally in tries.tallies.values()],
        }
        print(json.dumps(figures, indent=2))
        return
    print(
        f"run {args.run_dir}: simulator {config.get('simulator')}, {len(tasks)} tasks, "
        f"{len(episodes)} episodes"
    )
    print_table("records the run kept (what training sees):", records, args.examples)
    print_table("every simulator try, rejected ones included:", tries, args.examples)


if __name__ == "__main__":
    main()
