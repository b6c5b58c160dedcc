"""The training benchmark runs end to end at a tiny size: partition through the jobs, the in-process limit, three
real tfspark jobs, the batch table, and the JSON line last."""

from __future__ import annotations

import math
import subprocess

import pytest

from bench.harness import child_environment, last_json_line, module_command

FIGURES = ("limit_eps", "job_eps", "ratio", "job_rmse", "limit_rmse", "bias_rmse", "speedup", "today_eps",
           "today_rmse", "j1_eps")


@pytest.mark.slow
def test_a_tiny_day_reports_every_run_side_by_side(tmp_path):
    command = module_command("bench.training", "--events", "20000", "--epochs", "1", "--batch-sizes", "256,1024",
                             "--cache-dir", str(tmp_path))
    finished = subprocess.run(command, env=child_environment(), capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr[-3000:]

    figures = last_json_line(finished.stdout)
    assert figures["events"] == 20000
    assert len(figures["commit"]) >= 7
    for key in FIGURES:
        assert isinstance(figures[key], float) and math.isfinite(figures[key]) and figures[key] > 0, key
    assert figures["ratio"] == pytest.approx(figures["job_eps"] / figures["limit_eps"])
    assert figures["speedup"] == pytest.approx(figures["job_eps"] / figures["today_eps"])
    table = finished.stdout
    assert table.count("| L probe (") == 2  # both feeds of the limit
    for row in ("| J1 |", "| J2 |", "| J0 |", "| bias |", "| 256 |", "| 1024 |"):
        assert row in table, row
    assert (tmp_path / "20000" / "ready.json").exists()
