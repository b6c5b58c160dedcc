"""The training benchmark runs end to end at a tiny size: partition through the jobs, the in-process limit, the
tfspark job as the DAG runs it (J2; J1 and J0 are the same job with other arguments, left out to keep the suite
short), the batch table, and the JSON line last."""

from __future__ import annotations

import math
import subprocess

import pytest

from bench.harness import child_environment, last_json_line, module_command

FIGURES = ("limit_eps", "job_eps", "ratio", "job_rmse", "limit_rmse", "bias_rmse")
NOT_RUN = ("speedup", "today_eps", "today_rmse", "j1_eps")


@pytest.mark.slow
def test_a_tiny_day_reports_every_run_side_by_side(tmp_path):
    command = module_command("bench.training", "--events", "20000", "--epochs", "1", "--batch-sizes", "256,1024",
                             "--jobs", "J2", "--cache-dir", str(tmp_path))
    finished = subprocess.run(command, env=child_environment(), capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr[-3000:]

    figures = last_json_line(finished.stdout)
    assert figures["events"] == 20000
    assert len(figures["commit"]) >= 7
    for key in FIGURES:
        assert isinstance(figures[key], float) and math.isfinite(figures[key]) and figures[key] > 0, key
    assert figures["ratio"] == pytest.approx(figures["job_eps"] / figures["limit_eps"])
    for key in NOT_RUN:
        assert figures[key] is None, key
    table = finished.stdout
    assert table.count("| L (") == 2  # both feeds of the limit
    for row in ("| J2 |", "| bias |", "| 256 |", "| 1024 |"):
        assert row in table, row
    assert "| J1 |" not in table and "| J0 |" not in table
    assert "speedup J2 / J0: not measured (J0 not run)" in table
    assert (tmp_path / "20000" / "ready.json").exists()
