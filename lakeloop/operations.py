"""How the daily DAG retries and when it alerts on lateness, from the environment with safe defaults.

See docs/operations.md (retries and timeouts, alerting). Values are checked when loaded, like the settings of
`lakeloop.config`: a bad one raises ConfigurationError naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from lakeloop.config import SettingsReader, parse_finite_within, parse_positive_seconds, parse_whole_number

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

    def retry_arguments(self) -> dict[str, Any]:
        """A DAG's `default_args` for this retry policy: the retries, the first delay, then doubling up to
        MAX_RETRY_DELAY; so every lakeloop DAG retries the same way."""
        return {"retries": self.retries, "retry_delay": self.retry_delay,
                "retry_exponential_backoff": RETRY_BACKOFF_MULTIPLIER, "max_retry_delay": MAX_RETRY_DELAY}


def parse_retries(text: str) -> int:
    """Retries per task: a whole number >= 0 (a negative count used to reach Airflow unnoticed)."""
    return parse_whole_number(text, 0)


def parse_retry_delay(text: str) -> timedelta:
    """The first retry delay: a finite number of seconds > 0."""
    seconds = parse_positive_seconds(text)
    try:
        return timedelta(seconds=seconds)
    except OverflowError:  # beyond timedelta's 999999999 days
        raise ValueError("a finite number of seconds > 0") from None


def parse_run_deadline(text: str) -> timedelta | None:
    """The run deadline: a finite number of minutes > 0; empty or 0 means no deadline."""
    allowed = "a finite number of minutes > 0, or 0 or empty for no deadline"
    if text.strip() == "":
        return None
    minutes = parse_finite_within(text, allowed, minimum=0)
    try:
        return timedelta(minutes=minutes) if minutes > 0 else None
    except OverflowError:  # beyond timedelta's 999999999 days
        raise ValueError(allowed) from None


def load_operations(environ: Mapping[str, str] | None = None) -> Operations:
    """Read and check the knobs from `environ` (default: the process environment); an unset, empty or 0 deadline
    is none. Bad values raise one ConfigurationError naming each variable."""
    env = os.environ if environ is None else environ
    defaults = Operations()
    reader = SettingsReader(env)
    operations = Operations(
        retries=reader.read("LAKELOOP_TASK_RETRIES", parse_retries, defaults.retries),
        retry_delay=reader.read("LAKELOOP_RETRY_DELAY_SECONDS", parse_retry_delay, defaults.retry_delay),
        run_deadline=reader.read(RUN_DEADLINE_ENV, parse_run_deadline, defaults.run_deadline),
    )
    reader.check()
    return operations
