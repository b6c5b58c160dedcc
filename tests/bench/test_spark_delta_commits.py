"""The Spark-side commit benchmark runs every way on a tiny day in one Spark session, reports each, and checks that
delta-spark and delta-rs read each other's tables."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.harness import child_environment
from bench.spark_delta_commits import DAY, OTHER_DAYS, WAYS, start_session

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run() -> tuple[dict, str]:
    """One `--quick` run for the whole module, as its own process (delta-spark's jars need a JVM of their own): its
    summary (the last line) and what it printed."""
    completed = subprocess.run([sys.executable, "-m", "bench.spark_delta_commits", "--quick"], env=child_environment(),
                               capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1]), completed.stdout


def test_a_process_that_already_has_a_spark_session_is_refused(spark):
    with pytest.raises(RuntimeError, match="needs a process without a Spark session"):
        start_session(with_delta=True)
    assert spark.range(3).selectExpr("sum(id)").collect()[0][0] == 3, "the running session is left as it was"


def test_table_has_a_row_per_way_and_the_json_line_is_last(quick_run):
    summary, output = quick_run
    lines = output.strip().splitlines()

    assert all(f"| {way} |" in output for way in WAYS)
    assert lines[-1].startswith("{") and not any(line.startswith("{") for line in lines[:-1])
    assert set(summary) >= {"rows", "interop", "session_start", "load_average"}


def test_summary_has_every_way_cold_and_warm(quick_run):
    summary, _ = quick_run

    assert summary["rows"] == 200
    for way in ("plain", "delta_spark", "delta_rs"):
        for figure in ("cold_write_s", "write_s", "cold_read_s", "read_s"):
            assert summary[f"{way}_{figure}"] > 0, f"{way}_{figure}"
    assert summary["delta_spark_vs_delta_rs_write"] > 0
    assert not any(key.startswith("manifest") for key in summary)
    assert summary["session_start"] == {"without_delta_s": None, "with_delta_s": None}
    assert len(summary["load_average"]) == 2


def test_each_engine_reads_the_others_table_whole_days_only(quick_run):
    summary, _ = quick_run
    expected = {DAY.isoformat(): 200, **{day.isoformat(): rows for day, rows in OTHER_DAYS.items()}}

    assert summary["interop"]["delta_spark_reads_delta_rs_table"] == expected
    assert summary["interop"]["delta_rs_reads_delta_spark_table"] == expected
    assert summary["interop"]["held"] is True
