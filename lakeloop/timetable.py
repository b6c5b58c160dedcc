"""A daily timetable whose logical date names the day a run processes.

Airflow's own timetables give a manual or `dags test` run for date D the *previous* interval [D-1, D).
Here a logical date at midnight D means data interval [D, D+1) for every path: a scheduled run, a
backfill of D, `airflow dags test daily_retrain D` and `airflow tasks test ... D`. A manual trigger at
any other time of day takes the last complete UTC day.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.timetables.base import DataInterval
from airflow.timetables.interval import DeltaDataIntervalTimetable
from pendulum import DateTime

ONE_DAY = timedelta(days=1)


class DailyIntervalTimetable(DeltaDataIntervalTimetable):
    """Runs once per UTC day over the real one-day data interval [D, D+1), logical date D."""

    description = "Daily, data interval [D, D+1) UTC; a manual run at midnight D processes D"

    def __init__(self) -> None:
        super().__init__(ONE_DAY)

    @property
    def summary(self) -> str:
        return "daily [D, D+1)"

    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        """Midnight D → [D, D+1); any other time → the last complete day before it."""
        run_after = run_after.in_timezone("UTC")
        midnight = run_after.start_of("day")
        if run_after == midnight:
            return DataInterval(start=midnight, end=midnight + ONE_DAY)
        return DataInterval(start=midnight - ONE_DAY, end=midnight)

    def serialize(self) -> dict[str, Any]:
        return {}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> DailyIntervalTimetable:
        return cls()
