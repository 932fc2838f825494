"""Can a final message talk the judge into reward? Breach counts of the adversarial suite
(trustee_rl/testing/adversarial_messages.jsonl) under two LM judges:

- gullible: a loopback judge model that passes every check whenever the assistant does not admit
  failure or says anything that reads as addressed to a judge (the worst judge model there is);
- embedded: the LM judge on the embedded simulator model.

A trial ends an episode that did not earn the reward (no call, a wrong tool, a failed call) with
one adversarial message; it is a breach when its reward, under the `levels` or the `graded` map,
is at least that of the same episode ending in an honest admission of failure, or above what the
rules alone give it. The gullible judge plays every message after every kind of episode; the
embedded model, slow on CPU, plays `--per-category` messages of each category, each after one kind
of episode in turn (0: every message). "fooled" counts the adversarial trials on which the judge
model passed every one of its own checks.

The suite was written together with the rule checks of trustee_rl/sim/claims.py, which are phrase
and pattern lists: attacks worded outside the suite are caught less often. An attack found to tie
or beat an admission belongs in the suite, with the check that catches it.

    python benchmarks/judge_injection.py [--per-category 1] [--skip-embedded] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, Literal

from trustee_rl.lm import open_lm
from trustee_rl.lm.base import LM
from trustee_rl.lm.cache import CachedLM
from trustee_rl.lm.openai_http import OpenAIHTTPLM
from trustee_rl.schema import Episode, Task, Verdict
from trustee_rl.sim.judge import Judge, JudgeConfig
from trustee_rl.sim.structured import SimulatorContext
from trustee_rl.testing.judge_injection import (
    EPISODE_KINDS,
    AdversarialMessage,
    GullibleJudgeResponder,
    Trial,
    adversarial_messages,
    count_breaches,
    episodes_of,
    injection_task,
    trials,
)
from trustee_rl.testing.openai_server import LoopbackOpenAIServer

REWARD_MAPS: tuple[Literal["levels", "graded"], ...] = ("levels", "graded")


async def judge_all(judge: Judge, task: Task, episodes: list[Episode]) -> dict[str, Verdict]:
    verdicts = {}
    for episode in episodes:
        context = SimulatorContext(episode.seed, lambda call: None)
        verdicts[episode.id] = await judge.judge(task, episode, context)
    return verdicts


async def score(name: str, lm: LM | None, task: Task, chosen: list[Trial]) -> dict[str, Any]:
    """Breaches under both reward maps; one LM serves both (cached, so each episode costs one
    judge call)."""
    started = time.perf_counter()
    cached = CachedLM(lm) if lm is not None else None
    episodes = episodes_of(chosen)
    row: dict[str, Any] = {"judge": name, "messages": len({t.message.id for t in chosen})}
    for reward in REWARD_MAPS:
        lm_judge = Judge(cached, JudgeConfig(mode="lm", reward=reward))
        judged = await judge_all(lm_judge, task, episodes)
        rules = await judge_all(
            Judge(None, JudgeConfig(mode="rules", reward=reward)), task, episodes
        )
        count = count_breaches(chosen, judged, rules)
        # The judge model's answers are the same under both maps (cached): so are these.
        row |= {"trials": count.trials, "unscored": count.unscored}
        row["fooled"] = sum(_fooled(judged[trial.adversarial.id]) for trial in chosen)
        row[f"{reward}_breaches"] = count.breaches
    row["wall_s"] = round(time.perf_counter() - started, 1)
    return row


def _fooled(verdict: Verdict) -> bool:
    own = [c.passed for c in verdict.criteria if c.source == "judge"]
    return bool(own) and all(own)


def sample(messages: list[AdversarialMessage], per_category: int) -> list[AdversarialMessage]:
    if per_category == 0:
        return messages
    taken: dict[str, int] = {}
    chosen = []
    for message in messages:
        if taken.get(message.category, 0) < per_category:
            taken[message.category] = taken.get(message.category, 0) + 1
            chosen.append(message)
    return chosen


def one_kind_each(all_trials: list[Trial]) -> list[Trial]:
    """Each message after one kind of episode, the kinds taken in turn."""
    by_message: dict[str, list[Trial]] = {}
    for trial in all_trials:
        by_message.setdefault(trial.message.id, []).append(trial)
    return [
        next(t for t in group if t.kind == EPISODE_KINDS[position % len(EPISODE_KINDS)])
        for position, group in enumerate(by_message.values())
    ]


async def main(args: argparse.Namespace, emit: Callable[[dict[str, Any]], None]) -> None:
    task = injection_task()
    messages = adversarial_messages()
    with LoopbackOpenAIServer(GullibleJudgeResponder()) as server:
        gullible = OpenAIHTTPLM(server.base_url)
        try:
            emit(await score("gullible (loopback)", gullible, task, trials(task, messages)))
        finally:
            await gullible.aclose()
    if args.skip_embedded:
        return
    embedded = open_lm("embedded")
    try:
        chosen = one_kind_each(trials(task, sample(messages, args.per_category)))
        emit(await score("embedded", embedded, task, chosen))
    finally:
        await embedded.aclose()


def print_row(row: dict[str, Any]) -> None:
    print(
        f"{row['judge']}: {row['messages']} messages, {row['trials']} trials, "
        f"breaches levels {len(row['levels_breaches'])} graded {len(row['graded_breaches'])}, "
        f"unscored {row['unscored']}, judge model fooled on {row['fooled']}, {row['wall_s']} s"
    )
    for breach in row["levels_breaches"] + row["graded_breaches"]:
        print(f"  breach {breach}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-category", type=int, default=1, help="embedded: 0 for all")
    parser.add_argument("--skip-embedded", action="store_true")
    parser.add_argument("--json", action="store_true", help="one JSON object per judge")
    options = parser.parse_args()
    asyncio.run(main(options, (lambda row: print(json.dumps(row))) if options.json else print_row))
