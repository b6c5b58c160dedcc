"""How the daily DAG retries and when it alerts on lateness, from the environment with safe defaults.

See docs/operations.md (retries and timeouts, alerting).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

RETRY_BACKOFF_MULTIPLIER = 2.0
RUN_DEADLINE_ENV = "LAKELOOP_RUN_DEADLINE_MINUTES"
SCHEDULED_RUN_DEADLINE_MINUTES = 360
MAX_RETRY_DELAY = timedelta(minutes=30)


@dataclass(frozen=True)
class Operations:
    """Retry policy and run deadline of the daily DAG."""

    retries: int = 2
    retry_delay: timedelta = timedelta(seconds=120)
    run_deadline: timedelta | None = None


def load_operations(environ: Mapping[str, str] | None = None) -> Operations:
    """Read the knobs from `environ` (default: the process environment); an unset or 0 deadline is none."""
    env = os.environ if environ is None else environ
    defaults = Operations()
    deadline_minutes = float(env.get(RUN_DEADLINE_ENV) or 0)
    return Operations(
        retries=int(env.get("LAKELOOP_TASK_RETRIES", defaults.retries)),
        retry_delay=timedelta(seconds=float(env.get("LAKELOOP_RETRY_DELAY_SECONDS",
                                                    defaults.retry_delay.total_seconds()))),
        run_deadline=timedelta(minutes=deadline_minutes) if deadline_minutes > 0 else None,
    )
