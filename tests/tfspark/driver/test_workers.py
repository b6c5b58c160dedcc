"""How many TensorFlow workers a job gets when the user does not say."""

from __future__ import annotations

import argparse
import logging

import pytest

from tfspark.driver.submit import build_command
from tfspark.driver.workers import resolve_num_workers, worker_count


def test_num_workers_is_auto_or_a_whole_number():
    assert worker_count("auto") is None and worker_count("3") == 3
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="auto"):
            worker_count(bad)


def test_a_local_master_gets_one_worker_using_every_core(spark, caplog):
    """local[2] has two task slots, but one machine: a second worker would split its cores and add collectives."""
    with caplog.at_level(logging.INFO, logger="tfspark"):
        assert resolve_num_workers(None, spark.sparkContext) == 1
    assert "one machine" in caplog.text
    assert resolve_num_workers(2, spark.sparkContext) == 2


def test_tfspark_submit_defaults_to_auto_on_every_local_core():
    command = build_command(["--trainer", "m:T"])
    assert command[command.index("--master") + 1] == "local[*]"
    assert command[command.index("--num-workers") + 1] == "auto"
