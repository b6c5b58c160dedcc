"""The Spark-side commit benchmark runs every way on a tiny day in one Spark session, reports each, and checks that
delta-spark and delta-rs read each other's tables."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from bench.spark_delta_commits import DAY, OTHER_DAYS, WAYS, main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run() -> tuple[dict, str]:
    """One `--quick` run for the whole module (one Spark session): its summary and what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        summary = main(["--quick"])
    return summary, printed.getvalue()


def test_table_has_a_row_per_way_and_the_json_line_is_last(quick_run):
    summary, output = quick_run

    assert all(f"| {way} |" in output for way in WAYS)
    assert json.loads(output.strip().splitlines()[-1]) == summary


def test_summary_has_every_way_cold_and_warm(quick_run):
    summary, _ = quick_run

    assert summary["rows"] == 200
    for way in ("plain", "manifest", "delta_spark", "delta_rs"):
        for figure in ("cold_write_s", "write_s", "cold_read_s", "read_s"):
            assert summary[f"{way}_{figure}"] > 0, f"{way}_{figure}"
    assert summary["delta_spark_vs_delta_rs_write"] > 0
    assert summary["session_start"] == {"without_delta_s": None, "with_delta_s": None}
    assert len(summary["load_average"]) == 2


def test_each_engine_reads_the_others_table_whole_days_only(quick_run):
    summary, _ = quick_run
    expected = {DAY.isoformat(): 200, **{day.isoformat(): rows for day, rows in OTHER_DAYS.items()}}

    assert summary["interop"]["delta_spark_reads_delta_rs_table"] == expected
    assert summary["interop"]["delta_rs_reads_delta_spark_table"] == expected
    assert summary["interop"]["held"] is True
