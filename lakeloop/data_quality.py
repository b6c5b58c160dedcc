"""What a failed data-quality check does to the day: fail it, or warn and go on (its severity), and how an
operator accepts a real change in the data. No imports: the DAG offers these defaults as run params.

See docs/etl-and-features.md (data quality).
"""

from __future__ import annotations

import logging

FAIL, WARN = "fail", "warn"
SEVERITIES = (FAIL, WARN)
DEFAULT_MAX_RATING_DRIFT = 0.2
DEFAULT_MIN_ROWS = 1

log = logging.getLogger(__name__)


class DataQualityError(RuntimeError):
    """A data-quality check failed the day: its input would make every later day wrong."""


def check_severity(name: str, severity: str) -> str:
    """`severity` if it is one of `SEVERITIES`; a ValueError naming the parameter otherwise."""
    if severity not in SEVERITIES:
        raise ValueError(f"{name}={severity!r}: a severity is one of {list(SEVERITIES)}")
    return severity


def enforce(severity: str, problem: str, accept: str) -> None:
    """Raise `DataQualityError` for a `fail` check, with how to accept the change; log a warning for `warn`."""
    if severity == FAIL:
        raise DataQualityError(f"{problem}. If the data really changed, accept it: {accept}")
    log.warning("%s (severity warn: the day goes on)", problem)
