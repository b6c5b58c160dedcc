"""The end-to-end benchmark's generator makes a realistic day: exact count, catalog movies, derived not copied users,
popularity skew, one rating per user and movie, reproducible."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pyarrow.compute as pc
import pytest

from bench.support.synthetic_events import generate_events

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
