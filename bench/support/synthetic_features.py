"""The feed benchmark's data set: MovieLens 100K ratings re-sampled with replacement to any number of rows, mapped to
the FM's inputs (`lakeloop.features.FEATURE_COLUMNS`) and the label, as one Parquet table generated once and reused.
See docs/performance.md.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lakeloop.features import FEATURE_COLUMNS, GENRES, HISTORY_COLUMNS, INDEX_COLUMNS, LABEL, YEAR_BUCKETS, FeatureSpec

if TYPE_CHECKING:
    from lakeloop.movielens import MovieLens

GENRE_WIDTH = len(GENRES)
FEATURE_SCHEMA = pa.schema([
    *[(name, pa.int64()) for name in INDEX_COLUMNS],
    ("genres", pa.list_(pa.float32())),
    *[(name, pa.float32()) for name in HISTORY_COLUMNS],
    (LABEL, pa.float32()),
])
FEATURE_DTYPES = {field.name: np.int64 if pa.types.is_int64(field.type) else np.float32 for field in FEATURE_SCHEMA}
GENERATE_CHUNK_ROWS = 1_000_000
ROW_GROUP_ROWS = 1 << 17

Columns = dict[str, np.ndarray]


@dataclass(frozen=True)
class RatingFeatures:
    """MovieLens ratings as FM inputs, one entry per rating; the genre rows are shared through `catalog_row`.

    Indices start at 1 (0 is the out-of-vocabulary bucket, as in `jobs.features`); the history columns are
    each user's and item's mean rating and count over the whole data set (the real table counts only the
    ratings before each one: same shape and types, which is what a feed benchmark needs).
    """

    user_idx: np.ndarray
    item_idx: np.ndarray
    label: np.ndarray
    catalog_row: np.ndarray
    year_idx_by_movie: np.ndarray
    genres_by_movie: np.ndarray
    history: dict[str, np.ndarray]


def history_statistics(index: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each rating's entity's mean rating and rating count (float32), entities numbered by `index`."""
    counts = np.bincount(index).astype(np.float64)
    means = np.bincount(index, weights=label) / np.maximum(counts, 1)
    return means[index].astype(np.float32), counts[index].astype(np.float32)


def year_buckets(years: pa.Array) -> np.ndarray:
    """Five-year buckets from 1920 (bucket 1, as `lakeloop.spark_inputs.year_index`); 0 for an unknown year."""
    known = np.asarray(pc.fill_null(years, 1920).to_numpy(zero_copy_only=False), dtype=np.int64)
    buckets = np.clip((known - 1920) // 5, 0, YEAR_BUCKETS - 2) + 1
    return np.where(np.asarray(years.is_null().to_numpy(zero_copy_only=False)), 0, buckets)


def genre_multi_hot(genres: pa.ListArray) -> np.ndarray:
    """A (movies, 19) float32 matrix with 1.0 at each genre of each movie, in `GENRES` order."""
    matrix = np.zeros((len(genres), GENRE_WIDTH), dtype=np.float32)
    flat = genres.flatten()
    position = pc.index_in(flat, value_set=pa.array(GENRES)).to_numpy(zero_copy_only=False)
    parent = pc.list_parent_indices(genres).to_numpy()
    known = ~np.isnan(position.astype(np.float64))
    matrix[parent[known], position[known].astype(np.int64)] = 1.0
    return matrix


def rating_features(movielens: MovieLens) -> RatingFeatures:
    """Map MovieLens 100K to the FM inputs, vectorised: dense id indices, year bucket, genre multi-hot."""
    ratings, movies = movielens.ratings, movielens.movies.combine_chunks()
    _, user_idx = np.unique(ratings["user_id"].to_numpy(), return_inverse=True)
    _, item_idx = np.unique(ratings["item_id"].to_numpy(), return_inverse=True)
    catalog_row = pc.index_in(ratings["item_id"], value_set=movies["item_id"])
    if catalog_row.null_count:
        raise ValueError(f"{catalog_row.null_count} ratings name a movie missing from the catalog")
    label = ratings["rating"].to_numpy().astype(np.float32)
    history = {}
    for entity, index in (("user", user_idx), ("item", item_idx)):
        history[f"{entity}_mean_rating"], history[f"{entity}_rating_count"] = history_statistics(index, label)
    return RatingFeatures(
        user_idx=user_idx.astype(np.int64) + 1,
        item_idx=item_idx.astype(np.int64) + 1,
        label=label,
        catalog_row=catalog_row.to_numpy().astype(np.int64),
        year_idx_by_movie=year_buckets(movies["year"]),
        genres_by_movie=genre_multi_hot(movies["genres"].combine_chunks()),
        history=history,
    )


def sample_table(features: RatingFeatures, rng: np.random.Generator, rows: int) -> pa.Table:
    """`rows` ratings drawn with replacement, as an Arrow table of `FEATURE_SCHEMA`."""
    picks = rng.integers(0, len(features.label), rows)
    movie = features.catalog_row[picks]
    genres = pa.ListArray.from_arrays(
        pa.array(np.arange(0, (rows + 1) * GENRE_WIDTH, GENRE_WIDTH, dtype=np.int32)),
        pa.array(features.genres_by_movie[movie].ravel()),
    )
    columns = {
        "user_idx": features.user_idx[picks],
        "item_idx": features.item_idx[picks],
        "year_idx": features.year_idx_by_movie[movie],
        "genres": genres,
        **{name: values[picks] for name, values in features.history.items()},
        LABEL: features.label[picks],
    }
    return pa.Table.from_arrays([pa.array(columns[name]) for name in FEATURE_SCHEMA.names], schema=FEATURE_SCHEMA)


def ensure_dataset(data_dir: Path, rows: int, seed: int = 0) -> Path:
    """The Parquet feature table of `rows` rows in `data_dir`, generated on the first call and then reused."""
    path = Path(data_dir) / f"fm-features-v2-{rows}-seed{seed}.parquet"
    if path.exists():
        return path
    from lakeloop.config import load_settings
    from lakeloop.movielens import load_movielens

    started = time.monotonic()
    features = rating_features(load_movielens(load_settings().dataset_dir))
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with pq.ParquetWriter(partial, FEATURE_SCHEMA) as writer:
        for start in range(0, rows, GENERATE_CHUNK_ROWS):
            writer.write_table(sample_table(features, rng, min(GENERATE_CHUNK_ROWS, rows - start)),
                               row_group_size=ROW_GROUP_ROWS)
    os.replace(partial, path)
    print(f"generated {rows:,} rows into {path} ({path.stat().st_size / 2**20:.0f} MiB) "
          f"in {time.monotonic() - started:.1f}s", flush=True)
    return path


def dataset_spec(path: Path) -> FeatureSpec:
    """The FM's `FeatureSpec` for a feature table (vocabulary sizes from the largest indices)."""
    table = pq.read_table(path, columns=["user_idx", "item_idx", LABEL])
    label = table[LABEL]
    return FeatureSpec(user_vocab_size=pc.max(table["user_idx"]).as_py() + 1,
                       item_vocab_size=pc.max(table["item_idx"]).as_py() + 1,
                       prior_mean=pc.mean(label).as_py(), rating_min=pc.min(label).as_py(),
                       rating_max=pc.max(label).as_py())


def read_parquet_numpy(path: Path) -> tuple[Columns, np.ndarray]:
    """The feature table as numpy columns with pyarrow alone: ({feature: array}, label)."""
    table = pq.read_table(path)
    features = {name: table[name].to_numpy() for name in FEATURE_COLUMNS if name != "genres"}
    features["genres"] = table["genres"].combine_chunks().flatten().to_numpy().reshape(-1, GENRE_WIDTH)
    return features, table[LABEL].to_numpy()
