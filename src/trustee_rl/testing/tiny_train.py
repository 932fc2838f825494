"""The smallest `trustee train` that still checkpoints every step: the settings tests and the
kill-loop benchmark train with, against a loopback simulator."""

from __future__ import annotations

TINY_TRAIN = [
    "tasks_per_step=1",
    "group_size=2",
    "micro_batch_size=2",
    "max_turn_tokens=12",
    "max_episode_tokens=24",
    "warm_start.enabled=false",
    "eval.tasks=2",
    "checkpoint_every=1",
    "min_informative_groups=0",
    "gradient_checkpointing=false",
    "taskgen.request_writer=simulator",  # the simulator writes requests, as a capable one would
]


def set_options(settings: list[str]) -> list[str]:
    """`--set KEY=VALUE` for each setting, in order (a later one wins)."""
    return [option for setting in settings for option in ("--set", setting)]
