"""The lakeloop Airflow plugin: registers the project's timetable so serialized DAGs can use it."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from lakeloop.timetable import DailyIntervalTimetable


class LakeloopPlugin(AirflowPlugin):
    """Timetables (and, later, extra links, listeners and views) for lakeloop."""

    name = "lakeloop"
    timetables = [DailyIntervalTimetable]
