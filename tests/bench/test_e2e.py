"""The end-to-end bench's generator makes a realistic day (exact count, catalog movies, derived not copied users,
popularity skew, one rating per user and movie) and its report code computes the table and cost ratios right.
No DAG run here: `bench.e2e` itself is that run."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pyarrow.compute as pc
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
from bench.e2e_events import generate_events

DAY = date(2026, 11, 20)
EVENTS = 20_000


@pytest.fixture(scope="module")
def events(movielens):
    return generate_events(movielens, EVENTS, DAY, seed=3)


def test_the_day_has_exactly_the_events_asked_for_inside_the_day(events):
    assert events.num_rows == EVENTS
    assert events.column_names == ["event_id", "user_id", "item_id", "rating", "ts"]
    assert pc.count_distinct(events["event_id"]).as_py() == EVENTS
    start_ms = datetime.combine(DAY, datetime.min.time(), UTC).timestamp() * 1000
    ts = events["ts"].to_numpy()
    assert start_ms <= ts.min() and ts.max() < start_ms + 86_400_000
    assert np.all(np.diff(ts) >= 0)
    assert set(np.unique(events["rating"].to_numpy())) <= {1.0, 2.0, 3.0, 4.0, 5.0}


def test_items_come_from_the_catalog_and_each_user_rates_a_movie_once(events, movielens):
    catalog = set(pc.cast(movielens.movies["item_id"], "int64").to_pylist())
    items = events["item_id"].to_numpy()
    assert set(np.unique(items)) <= catalog
    users = events["user_id"].to_numpy()
    assert len(np.unique(users * 4096 + items)) == EVENTS


def test_users_are_derived_not_copied(events, movielens):
    real = movielens.ratings
    real_sets = {}
    for user, item in zip(real["user_id"].to_pylist(), real["item_id"].to_pylist(), strict=True):
        real_sets.setdefault(user, set()).add(int(item))
    real_frozen = {frozenset(items) for items in real_sets.values()}
    synthetic = {}
    for user, item in zip(events["user_id"].to_pylist(), events["item_id"].to_pylist(), strict=True):
        synthetic.setdefault(user, set()).add(item)
    assert len(synthetic) > 100
    assert not any(frozenset(items) in real_frozen for items in synthetic.values())
    activity = np.array([len(items) for items in synthetic.values()])
    assert activity.max() > 5 * np.median(activity)  # heavy-tailed, as observed


def test_popularity_is_skewed_like_movielens(events, movielens):
    def top_decile_share(items: np.ndarray) -> float:
        counts = np.sort(np.bincount(items))[::-1]
        return counts[:168].sum() / counts.sum()  # the 10% most rated of 1682 movies

    real_share = top_decile_share(pc.cast(movielens.ratings["item_id"], "int64").to_numpy())
    share = top_decile_share(events["item_id"].to_numpy())
    assert share > 0.3
    assert abs(share - real_share) < 0.15


def test_generation_is_reproducible(movielens, events):
    assert generate_events(movielens, EVENTS, DAY, seed=3).equals(events)
    assert not generate_events(movielens, EVENTS, DAY, seed=4).equals(events)


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
    for result, predict in ((small, 20.0), (large, 9.0)):
        end = result.tasks[-1].end
        result.tasks.append(TaskTiming("batch_predict", "success", predict, end, end + predict))
    large.scoring = TaskTiming("batch_predict", "success", 200.0, 5000.0, 5200.0)
    assert large.scored_dag_seconds == pytest.approx(60.0 + 420.0 + 200.0)
    assert per_event_cost_ratios([small, large]) == [(1_000_000, 10_000_000, pytest.approx(680.0 / 600.0))]
    assert "batch_predict 1.00" in format_ratios([small, large])
    assert "9.0 (no champion; with the day's model 200.0)" in format_table([small, large])
    assert SizeResult.from_json(large.to_json()).scoring == large.scoring
    large.scoring.state = "failed (1)"
    assert large.scored_dag_seconds == large.dag_seconds
    assert "with the day's model failed (1)" in format_table([large])
