"""The DAG's retry policy and run deadline come from the environment, with the deadline opt-in."""

from __future__ import annotations

from datetime import timedelta

from lakeloop.operations import Operations, load_operations


def test_defaults_retry_twice_and_declare_no_deadline():
    assert load_operations({}) == Operations(retries=2, retry_delay=timedelta(seconds=120), run_deadline=None)


def test_the_environment_sets_retries_delay_and_deadline():
    operations = load_operations({"LAKELOOP_TASK_RETRIES": "5", "LAKELOOP_RETRY_DELAY_SECONDS": "7",
                                  "LAKELOOP_RUN_DEADLINE_MINUTES": "90"})
    assert operations == Operations(retries=5, retry_delay=timedelta(seconds=7), run_deadline=timedelta(minutes=90))


def test_a_zero_or_empty_deadline_is_none():
    assert load_operations({"LAKELOOP_RUN_DEADLINE_MINUTES": "0"}).run_deadline is None
    assert load_operations({"LAKELOOP_RUN_DEADLINE_MINUTES": ""}).run_deadline is None
