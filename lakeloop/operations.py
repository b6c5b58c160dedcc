"""How the daily DAG retries and when it alerts on lateness, from the environment with safe defaults.

| Knob | Default | Environment variable |
|---|---|---|
| retries per task | 2 | `LAKELOOP_TASK_RETRIES` |
| first retry delay (then ×2 per retry, at most 30 min) | 120 s | `LAKELOOP_RETRY_DELAY_SECONDS` |
| deadline: a run must finish this long after it was queued | 360 min | `LAKELOOP_RUN_DEADLINE_MINUTES` |

A scheduled run of day D is queued when its interval closes (midnight UTC after D), so the default
deadline means "finished by 06:00 UTC". The knobs are read when the DAG file is parsed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

RETRY_BACKOFF_MULTIPLIER = 2.0
MAX_RETRY_DELAY = timedelta(minutes=30)


@dataclass(frozen=True)
class Operations:
    """Retry policy and run deadline of the daily DAG."""

    retries: int = 2
    retry_delay: timedelta = timedelta(seconds=120)
    run_deadline: timedelta = timedelta(minutes=360)


def load_operations(environ: Mapping[str, str] | None = None) -> Operations:
    """Read the knobs from `environ` (default: the process environment)."""
    env = os.environ if environ is None else environ
    defaults = Operations()
    return Operations(
        retries=int(env.get("LAKELOOP_TASK_RETRIES", defaults.retries)),
        retry_delay=timedelta(seconds=float(env.get("LAKELOOP_RETRY_DELAY_SECONDS",
                                                    defaults.retry_delay.total_seconds()))),
        run_deadline=timedelta(minutes=float(env.get("LAKELOOP_RUN_DEADLINE_MINUTES",
                                                     defaults.run_deadline.total_seconds() / 60))),
    )
