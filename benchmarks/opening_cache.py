"""Cost of one tau2 agent turn for a local model, with and without the KV cache of the conversation
opening (tau2's system prompt, domain policy and tools), and whether the replies are the same.

Run: .venv/bin/python benchmarks/opening_cache.py [--domain airline] [--repeats N] [--max-tokens T]
Needs the evaluation extras (`bash scripts/setup.sh --eval`). Each figure is the best of the repeats
(slower runs are the ones other processes disturbed), the two variants interleaved in one process.
The cache is filled before timing: a run pays for it once per domain.
"""

from __future__ import annotations

import argparse
import time

from trustee_rl.evaluate.tau2.agent import tau2_tools_as_ours  # first: it quiets tau2's logging
from trustee_rl.policy.factory import open_transformers_policy
from trustee_rl.schema import Message

CUSTOMER = "Hi, I want to cancel my reservation EHGLP3. My user id is emma_kim_9957."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", default="airline", choices=["airline", "retail", "telecom"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    from tau2.agent.llm_agent import AGENT_INSTRUCTION, SYSTEM_PROMPT
    from tau2.registry import registry

    policy = open_transformers_policy("embedded", max_new_tokens=args.max_tokens)
    environment = registry.get_env_constructor(args.domain)()
    system = SYSTEM_PROMPT.format(
        agent_instruction=AGENT_INSTRUCTION, domain_policy=environment.get_policy()
    )
    messages = [
        Message(role="system", content=system),
        Message(role="assistant", content="Hi! How can I help you today?"),
        Message(role="user", content=CUSTOMER),
    ]
    tools = tau2_tools_as_ours(environment.get_tools())
    context = policy.new_ledger().start(messages, tools)
    opening = policy.openings.opening(context)
    if opening is None:
        raise SystemExit("this conversation's opening is too short to be cached")

    start = time.perf_counter()
    policy.openings.copy(opening)
    fill_s = time.perf_counter() - start
    full_s, cached_s = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        (full,) = policy.generator([context], args.max_tokens)
        full_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        (cached,) = policy.generator(
            [context], args.max_tokens, prefix_cache=policy.openings.copy(opening)
        )
        cached_s.append(time.perf_counter() - start)

    print(f"tau2 {args.domain}: context {len(context)} tokens, opening {len(opening)} cached")
    print(f"  filling the cache (once per domain): {fill_s:.2f} s")
    print(f"  one turn, full prefill:              {min(full_s):.2f} s")
    print(f"  one turn, from the cached opening:   {min(cached_s):.2f} s")
    print(f"  speed-up: {min(full_s) / min(cached_s):.1f}x; replies identical: {full == cached}")
    print(f"  ({len(full)} generated tokens, best of {args.repeats})")


if __name__ == "__main__":
    main()
