"""The harness's shared pieces: best-of rounds and target verdicts, markdown tables, sizes, scratch directories and the
child-process JSON line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench import harness
from bench.harness import Measurement


def test_targets_are_met_only_when_the_best_and_the_median_round_agree():
    assert harness.verdict(0.85, 0.81, 0.8) == "met"
    assert harness.verdict(0.79, 0.62, 0.8) == "NOT met"
    assert harness.verdict(0.83, 0.74, 0.8) == "inconclusive (the rounds disagree)"


def test_the_best_round_is_kept_with_the_spread_of_all():
    rounds = [Measurement("x", 1000, 2.0, "slow"), Measurement("x", 1000, 1.0, "fast")]
    best = harness.best_of(rounds)
    assert (best.seconds, best.rows_per_second) == (1.0, 1000.0)
    assert best.note == "fast; best of 2 (500–1,000 rows/s)"
    assert harness.best_of(rounds[:1]) == rounds[0]


def test_rounds_alternate_their_order():
    assert harness.round_order(("a", "b", "c"), 0) == ["a", "b", "c"]
    assert harness.round_order(("a", "b", "c"), 1) == ["c", "b", "a"]


def test_markdown_tables():
    assert harness.markdown_table(["name", "rows"], [["a", "1,000"], ["b", 2]], "lr") == [
        "| name | rows |", "|---|--:|", "| a | 1,000 |", "| b | 2 |"]
    with pytest.raises(ValueError):
        harness.table_header(["name", "rows"], "l")


def test_sizes_parse_with_separators_and_empty():
    assert harness.parse_sizes("1000000, 5_000_000") == [1_000_000, 5_000_000]
    assert harness.parse_sizes("") == []


def test_a_given_work_directory_is_kept_and_a_temporary_one_removed(tmp_path):
    with harness.work_directory(tmp_path, "x-") as kept:
        assert kept == tmp_path
    assert tmp_path.exists()
    with harness.work_directory(None, "lakeloop-harness-test-") as scratch:
        (scratch / "file").write_text("x")
    assert not scratch.exists()


def test_a_bench_module_runs_as_a_child_from_any_directory_and_reports_one_json_line(tmp_path):
    code = "from bench.harness import print_json_line; print('progress'); print_json_line({'rows': 3})"
    child = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=harness.child_environment(),
                           capture_output=True, text=True, check=True)
    assert harness.last_json_line(child.stdout) == {"rows": 3}
    assert harness.module_command("bench.e2e", "--help") == [sys.executable, "-m", "bench.e2e", "--help"]
