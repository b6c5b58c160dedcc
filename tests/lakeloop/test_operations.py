"""The DAG's retry policy and run deadline come from the environment, with the deadline opt-in, and a bad value
is refused naming the variable."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from lakeloop.config import ConfigurationError
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


@pytest.mark.parametrize(("name", "value"), [
    ("LAKELOOP_TASK_RETRIES", "-2"), ("LAKELOOP_TASK_RETRIES", "1.5"), ("LAKELOOP_TASK_RETRIES", "abc"),
    ("LAKELOOP_TASK_RETRIES", ""),
    ("LAKELOOP_RETRY_DELAY_SECONDS", "-1"), ("LAKELOOP_RETRY_DELAY_SECONDS", "0"),
    ("LAKELOOP_RETRY_DELAY_SECONDS", "nan"), ("LAKELOOP_RETRY_DELAY_SECONDS", "inf"),
    ("LAKELOOP_RETRY_DELAY_SECONDS", "abc"), ("LAKELOOP_RETRY_DELAY_SECONDS", "1e300"),
    ("LAKELOOP_RUN_DEADLINE_MINUTES", "-5"), ("LAKELOOP_RUN_DEADLINE_MINUTES", "nan"),
    ("LAKELOOP_RUN_DEADLINE_MINUTES", "inf"), ("LAKELOOP_RUN_DEADLINE_MINUTES", "soon"),
])
def test_negative_or_non_numeric_knobs_are_refused_naming_the_variable(name, value):
    with pytest.raises(ConfigurationError, match="^" + re.escape(f"{name}={value!r}: ")):
        load_operations({name: value})


def test_zero_retries_and_fractional_delays_are_taken():
    operations = load_operations({"LAKELOOP_TASK_RETRIES": "0", "LAKELOOP_RETRY_DELAY_SECONDS": "0.5",
                                  "LAKELOOP_RUN_DEADLINE_MINUTES": "1.5"})
    assert operations == Operations(retries=0, retry_delay=timedelta(seconds=0.5),
                                    run_deadline=timedelta(minutes=1.5))


def test_one_error_names_every_bad_knob():
    with pytest.raises(ConfigurationError) as raised:
        load_operations({"LAKELOOP_TASK_RETRIES": "-2", "LAKELOOP_RETRY_DELAY_SECONDS": "-3"})
    assert [problem.name for problem in raised.value.problems] == ["LAKELOOP_TASK_RETRIES",
                                                                  "LAKELOOP_RETRY_DELAY_SECONDS"]
