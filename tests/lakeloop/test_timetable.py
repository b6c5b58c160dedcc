"""The day convention: a logical date at midnight D processes [D, D+1) on every path."""

from __future__ import annotations

import pendulum
import pytest
from airflow.timetables.base import DataInterval, TimeRestriction

from lakeloop.timetable import DailyIntervalTimetable

UTC = pendulum.UTC


def day(text: str) -> pendulum.DateTime:
    return pendulum.parse(text).in_timezone(UTC)


def test_manual_run_at_midnight_processes_that_day():
    interval = DailyIntervalTimetable().infer_manual_data_interval(run_after=day("2026-11-20T00:00:00Z"))
    assert interval == DataInterval(day("2026-11-20"), day("2026-11-21"))


@pytest.mark.parametrize("trigger", ["2026-11-26T15:30:00Z", "2026-11-26T00:00:01Z", "2026-11-26T23:59:59Z"])
def test_manual_trigger_during_the_day_takes_the_last_complete_day(trigger):
    interval = DailyIntervalTimetable().infer_manual_data_interval(run_after=day(trigger))
    assert interval == DataInterval(day("2026-11-25"), day("2026-11-26"))


def test_scheduled_runs_cover_whole_days_with_logical_date_at_their_start():
    timetable = DailyIntervalTimetable()
    restriction = TimeRestriction(earliest=day("2026-11-01"), latest=None, catchup=True)
    first = timetable.next_dagrun_info(last_automated_data_interval=None, restriction=restriction)
    assert first.data_interval == DataInterval(day("2026-11-01"), day("2026-11-02"))
    assert first.logical_date == day("2026-11-01")
    second = timetable.next_dagrun_info(last_automated_data_interval=first.data_interval, restriction=restriction)
    assert second.data_interval == DataInterval(day("2026-11-02"), day("2026-11-03"))


def test_round_trips_through_serialization():
    timetable = DailyIntervalTimetable()
    assert DailyIntervalTimetable.deserialize(timetable.serialize()).infer_manual_data_interval(
        run_after=day("2026-11-20")) == timetable.infer_manual_data_interval(run_after=day("2026-11-20"))
