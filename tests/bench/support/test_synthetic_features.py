"""The feed benchmark's data set matches the project's features and is generated once."""

from __future__ import annotations

import numpy as np

from bench.support import synthetic_features
from lakeloop.spark_inputs import genre_multi_hot, year_index


def test_sampled_rows_carry_the_catalog_features_spark_computes(movielens, spark):
    features = synthetic_features.rating_features(movielens)
    table = synthetic_features.sample_table(features, np.random.default_rng(1), 2_000)
    assert table.schema == synthetic_features.FEATURE_SCHEMA
    assert table.num_rows == 2_000

    movies = spark.createDataFrame(movielens.movies.to_pylist(),
                                   "item_id string, title string, year int, genres array<string>")
    expected = {
        row["item_id"]: (row["year_idx"], row["genres_hot"])
        for row in movies.select("item_id", year_index("year").alias("year_idx"),
                                 genre_multi_hot("genres").alias("genres_hot")).collect()
    }
    item_ids = np.unique(movielens.ratings["item_id"].to_numpy())
    columns = table.to_pydict()
    for item, year, genres in zip(columns["item_idx"], columns["year_idx"], columns["genres"], strict=True):
        spark_year, spark_genres = expected[item_ids[item - 1]]
        assert year == spark_year
        assert genres == spark_genres
    assert min(columns["user_idx"]) >= 1 and min(columns["item_idx"]) >= 1, "0 is the out-of-vocabulary index"
    assert set(columns["label"]) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert all(1.0 <= mean <= 5.0 for mean in columns["user_mean_rating"] + columns["item_mean_rating"])
    assert min(columns["user_rating_count"] + columns["item_rating_count"]) >= 1.0


def test_dataset_is_generated_once_and_reads_back_as_numpy(tmp_path):
    path = synthetic_features.ensure_dataset(tmp_path, 3_000)
    stamp = path.stat().st_mtime_ns
    assert synthetic_features.ensure_dataset(tmp_path, 3_000).stat().st_mtime_ns == stamp
    features, label = synthetic_features.read_parquet_numpy(path)
    assert features["genres"].shape == (3_000, synthetic_features.GENRE_WIDTH)
    assert {name: values.dtype for name, values in features.items()} == {
        "user_idx": np.int64, "item_idx": np.int64, "year_idx": np.int64, "genres": np.float32,
        "user_mean_rating": np.float32, "user_rating_count": np.float32,
        "item_mean_rating": np.float32, "item_rating_count": np.float32}
    assert label.dtype == np.float32 and len(label) == 3_000
    spec = synthetic_features.dataset_spec(path)
    assert spec.user_vocab_size > features["user_idx"].max() and 1.0 <= spec.prior_mean <= 5.0
