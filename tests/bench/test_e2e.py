"""The end-to-end benchmark's report code computes the table and cost ratios right. No DAG run here: `bench.e2e` itself
is that run (its generator is tested in tests/bench/support/test_synthetic_events.py)."""

from __future__ import annotations

import pytest

from bench.e2e import (
    ProcessPeak,
    SizeResult,
    TaskTiming,
    attribute_peaks,
    format_ratios,
    format_table,
    per_event_cost_ratios,
)


def _result(events: int, seconds: list[float]) -> SizeResult:
    tasks, clock = [], 1000.0
    for task_id, duration in zip(["ingest_ratings", "train_model"], seconds, strict=True):
        tasks.append(TaskTiming(task_id, "success", duration, clock, clock + duration))
        clock += duration
    return SizeResult(events=events, users=events // 100, generate_seconds=0.0, publish_seconds=0.0, returncode=0,
                      tasks=tasks, peak=ProcessPeak(), broker_peak_mib=0.0, state_dir="", measured_at="")


def test_cost_ratios_table_and_peak_attribution():
    results = [_result(1_000_000, [10.0, 30.0]), _result(10_000_000, [60.0, 420.0])]
    assert per_event_cost_ratios(results) == [(1_000_000, 10_000_000, pytest.approx(1.2))]
    samples = [ProcessPeak(100.0, 1, "a", 1005.0), ProcessPeak(900.0, 2, "spark-submit JVM (x)", 1100.0)]
    peak = results[1].peak = attribute_peaks(samples, results[1].tasks)
    assert (peak.rss_mib, peak.task_id) == (900.0, "train_model")
    assert results[1].tasks[0].peak.command == "a"
    table = format_table(results)
    row = "| 10,000,000 | 100,000 | 60.0 | 420.0 | 480.0 | 20,833 | 900 (spark-submit JVM (x), train_model) | 0 | — |"
    assert row in table
    failed = _result(100_000, [5.0, 1.0])
    failed.tasks[1].state = "failed"
    failed.returncode = 1
    assert per_event_cost_ratios([failed, *results]) == per_event_cost_ratios(results)
    assert "failed (1)" in format_table([failed])


def test_a_day_without_champion_counts_the_scoring_of_its_own_model():
    small, large = _result(1_000_000, [10.0, 30.0]), _result(10_000_000, [60.0, 420.0])
    for result, predict, state in ((small, 20.0, "success"), (large, 9.0, "skipped")):
        end = result.tasks[-1].end
        result.tasks.append(TaskTiming("batch_predict", state, predict, end, end + predict))
    assert large.succeeded, "without a champion batch_predict is skipped: the day still ran"
    large.scoring = TaskTiming("batch_predict", "success", 200.0, 5000.0, 5200.0)
    assert large.scored_dag_seconds == pytest.approx(60.0 + 420.0 + 200.0)
    assert per_event_cost_ratios([small, large]) == [(1_000_000, 10_000_000, pytest.approx(680.0 / 600.0))]
    assert "batch_predict 1.00" in format_ratios([small, large])
    assert "9.0 (no champion; with the day's model 200.0)" in format_table([small, large])
    assert SizeResult.from_json(large.to_json()).scoring == large.scoring
    large.tasks[0].state = "skipped"
    assert not large.succeeded, "only batch_predict may be skipped"
    large.tasks[0].state = "success"
    large.scoring.state = "failed (1)"
    assert large.scored_dag_seconds == large.dag_seconds
    assert "with the day's model failed (1)" in format_table([large])
