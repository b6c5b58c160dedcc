"""One day of synthetic rating events re-sampled from MovieLens 100K, for the end-to-end benchmark (`bench.e2e`): each
synthetic user is derived from a real one, not copied (activity drawn from the observed per-user counts, movies from
the real user's and by popularity, ratings from the real user's taste plus noise), over a uniform day.
See docs/performance.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lakeloop.movielens import MovieLens

DAY_MS = 86_400_000
ITEM_KEY_STRIDE = 1 << 12  # > any MovieLens 100K item id: (user, item) → one int64 key


@dataclass(frozen=True)
class RatingSource:
    """MovieLens ratings as numpy arrays grouped by real user, with the statistics the generator draws on."""

    items_by_user: np.ndarray  # item ids, grouped by user
    residual_by_user: np.ndarray  # rating - (user mean + item mean - global mean), same order
    user_starts: np.ndarray  # first index of each real user in the two arrays above
    user_counts: np.ndarray  # ratings per real user
    user_means: np.ndarray
    item_means: np.ndarray  # indexed by item id
    global_mean: float

    @classmethod
    def from_movielens(cls, movielens: MovieLens) -> RatingSource:
        """Group MovieLens' ratings by user and compute the user, item and global means."""
        ratings = movielens.ratings
        users = np.asarray(pc.cast(ratings["user_id"], pa.int64()))
        items = np.asarray(pc.cast(ratings["item_id"], pa.int64()))
        values = np.asarray(ratings["rating"], dtype=np.float64)
        order = np.argsort(users, kind="stable")
        users, items, values = users[order], items[order], values[order]
        _, user_starts, user_index, user_counts = np.unique(users, return_inverse=True, return_index=True,
                                                            return_counts=True)
        global_mean = float(values.mean())
        user_means = np.bincount(user_index, weights=values) / user_counts
        item_counts = np.bincount(items)
        item_means = np.divide(np.bincount(items, weights=values), item_counts,
                               out=np.full(item_counts.shape, global_mean), where=item_counts > 0)
        residual = values - (user_means[user_index] + item_means[items] - global_mean)
        return cls(items, residual, user_starts, user_counts, user_means, item_means, global_mean)


def generate_events(movielens: MovieLens, events: int, day: date, seed: int = 0, own_share: float = 0.7,
                    noise: float = 0.5) -> pa.Table:
    """`events` rating events on `day` (event_id, user_id, item_id, rating, ts; sorted by ts), see the module doc."""
    if events < 1:
        raise ValueError("events must be at least 1")
    source = RatingSource.from_movielens(movielens)
    rng = np.random.default_rng(seed)
    parts: list[tuple[np.ndarray, ...]] = []
    produced, first_user = 0, 1
    while produced < events:
        users, items, ratings = _sample_users(source, rng, events - produced, first_user, own_share, noise)
        parts.append((users, items, ratings))
        produced += len(users)
        first_user = int(users[-1]) + 1
    users, items, ratings = (np.concatenate(column)[:events] for column in zip(*parts, strict=True))
    start_ms = int(datetime.combine(day, datetime.min.time(), UTC).timestamp() * 1000)
    ts = start_ms + np.sort(rng.integers(0, DAY_MS, events))
    shuffled = rng.permutation(events)  # events of a user spread over the day
    users, items, ratings = users[shuffled], items[shuffled], ratings[shuffled]
    sequence = pa.array(np.arange(events)).cast(pa.string())
    return pa.table({
        "event_id": pc.binary_join_element_wise(f"e2e-{day:%Y%m%d}", sequence, "-"),
        "user_id": pa.array(users, pa.int64()),
        "item_id": pa.array(items, pa.int64()),
        "rating": pa.array(ratings, pa.float64()),
        "ts": pa.array(ts, pa.int64()),
    })


def _sample_users(source: RatingSource, rng: np.random.Generator, wanted: int, first_user: int, own_share: float,
                  noise: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """About `wanted` events of new synthetic users numbered from `first_user`, grouped by user."""
    real_users = len(source.user_counts)
    count = max(1, int(np.ceil(wanted / source.user_counts.mean())))
    base = rng.integers(0, real_users, count)
    activity = source.user_counts[rng.integers(0, real_users, count)]
    candidates = np.ceil(activity * 1.5).astype(np.int64) + 4  # room for the repeats dropped below
    owner = np.repeat(np.arange(count), candidates)
    owner_base = base[owner]
    own_pick = source.user_starts[owner_base] + (rng.random(len(owner)) * source.user_counts[owner_base]).astype(
        np.int64)
    popular_pick = rng.integers(0, len(source.items_by_user), len(owner))
    own = rng.random(len(owner)) < own_share
    pick = np.where(own, own_pick, popular_pick)
    items = source.items_by_user[pick]
    _, first = np.unique(owner * ITEM_KEY_STRIDE + items, return_index=True)
    kept = np.sort(first)  # each (user, movie) once, in the candidates' random order
    kept_owner = owner[kept]
    rank = np.arange(len(kept)) - np.searchsorted(kept_owner, kept_owner, side="left")
    kept = kept[rank < activity[kept_owner]]
    owner, items, own, pick = owner[kept], items[kept], own[kept], pick[kept]
    mean = (source.user_means[base[owner]] + source.item_means[items] - source.global_mean
            + np.where(own, source.residual_by_user[pick], 0.0) + rng.normal(0.0, noise, len(kept)))
    ratings = np.clip(np.rint(mean), 1.0, 5.0)
    return owner + first_user, items, ratings
