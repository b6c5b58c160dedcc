"""The lakeloop Airflow plugin: the project's timetable and its operator extra links.

The timetable must be registered so serialized DAGs can use it. The links (MLflow model version and run
on `register_model`, the MLflow model on `train_model`, the Spark UI on Spark tasks) are attached to those
tasks in the DAG and resolved by the worker when a task finishes; registering them here makes them known
to every Airflow component by name.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from lakeloop.timetable import DailyIntervalTimetable
from operators.links import LINKS


class LakeloopPlugin(AirflowPlugin):
    """Timetable and operator extra links of lakeloop."""

    name = "lakeloop"
    timetables = [DailyIntervalTimetable]
    operator_extra_links = list(LINKS)
