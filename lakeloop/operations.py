"""How the daily DAG retries and when it alerts on lateness, from the environment with safe defaults.

| Knob | Default | Environment variable |
|---|---|---|
| retries per task | 2 | `LAKELOOP_TASK_RETRIES` |
| first retry delay (then ×2 per retry, at most 30 min) | 120 s | `LAKELOOP_RETRY_DELAY_SECONDS` |
| run deadline after it was queued | none; 360 min under `lakeloop ui` | `LAKELOOP_RUN_DEADLINE_MINUTES` |

A scheduled run of day D is queued when its interval closes (midnight UTC after D), so 360 min means
"finished by 06:00 UTC". The knobs are read when the DAG file is parsed.

The deadline is opt-in because Airflow 3.3.2's `dag.test()` (`airflow dags test`, what `make run` uses)
cannot finish a run of a DAG that declares one: `DagRun.update_state` looks the DAG's deadline alerts up by
database id, but the in-memory DAG `dag.test()` builds holds their serialized dicts, and the run crashes
after its last task. The scheduler (`lakeloop ui`, the compose stack) stores them first and is unaffected,
so those set-ups (and the compose stack) turn the deadline on; `lakeloop airflow dags test` turns it off.
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
