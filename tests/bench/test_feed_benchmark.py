"""The feed benchmark works end to end at a tiny size, and its data set matches the project's features."""

from __future__ import annotations

import math

import numpy as np

from bench import feed_benchmark as bench
from lakeloop.spark_inputs import genre_multi_hot, year_index

UV_DRY_RUN = """Resolved 18 packages in 444ms
Would download 5 packages
Would uninstall 1 package
Would install 5 packages
 + diskcache==5.6.3
 + future==1.0.0
 + petastorm==0.13.1
 + pyzmq==27.3.0
 - setuptools==84.2.1
 + setuptools==69.5.1
"""


def test_sampled_rows_carry_the_catalog_features_spark_computes(movielens, spark):
    features = bench.rating_features(movielens)
    table = bench.sample_table(features, np.random.default_rng(1), 2_000)
    assert table.schema == bench.FEATURE_SCHEMA
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
    path = bench.ensure_dataset(tmp_path, 3_000)
    stamp = path.stat().st_mtime_ns
    assert bench.ensure_dataset(tmp_path, 3_000).stat().st_mtime_ns == stamp
    features, label = bench.read_parquet_numpy(path)
    assert features["genres"].shape == (3_000, bench.GENRE_WIDTH)
    assert {name: values.dtype for name, values in features.items()} == {
        "user_idx": np.int64, "item_idx": np.int64, "year_idx": np.int64, "genres": np.float32,
        "user_mean_rating": np.float32, "user_rating_count": np.float32,
        "item_mean_rating": np.float32, "item_rating_count": np.float32}
    assert label.dtype == np.float32 and len(label) == 3_000


def test_a_dry_run_that_replaces_a_pinned_package_means_petastorm_does_not_install():
    removed, added = bench.parse_dry_run(UV_DRY_RUN)
    assert removed == {"setuptools": "84.2.1"}
    assert added["petastorm"] == "0.13.1"
    verdict = bench.petastorm_verdict(removed, added)
    assert verdict.startswith("does not install with this stack")
    assert "setuptools 84.2.1 → 69.5.1" in verdict
    assert "pyarrow.filesystem" in verdict
    assert bench.petastorm_verdict({}, {"petastorm": "0.14.0"}) == (
        "would install without changing the stack, but is not installed here")


def test_a_target_is_met_only_when_the_best_rounds_and_the_median_round_agree():
    assert bench.ratio_line("r", 12.0, [11.0, 12.0, 9.0], 10.0).endswith("— met")
    assert bench.ratio_line("r", 8.0, [8.0, 7.0], 10.0).endswith("— NOT met")
    assert bench.ratio_line("r", 12.0, [12.0, 6.0, 7.0], 10.0).endswith("— inconclusive (the rounds disagree)")
    assert bench.ratio_line("r", 0.5, [0.5], None) == "- r: 0.50×"


def test_tfos_style_rows_become_numpy_columns():
    rows = [(1, 2, 3, [0.0] * 18 + [1.0], 3.5, 10.0, 4.0, 7.0, 4.0),
            (5, 6, 7, [1.0] + [0.0] * 18, 2.0, 1.0, 3.0, 2.0, 2.5)]
    features, label = bench.rows_to_columns(rows)
    assert features["genres"].shape == (2, bench.GENRE_WIDTH)
    assert features["user_idx"].tolist() == [1, 5] and features["user_idx"].dtype == np.int64
    assert features["item_rating_count"].tolist() == [7.0, 2.0] and features["item_rating_count"].dtype == np.float32
    assert label.tolist() == [4.0, 2.5]


def test_the_whole_benchmark_runs_at_a_tiny_size(spark, tmp_path):
    results = bench.run_benchmark(spark, tmp_path / "data", 5_000, [3_000], epochs=2, rss_workers=1,
                                  rss_cache_mb=0.1, quick=True, scaling_sizes=[3_000])

    assert [feed.name[:4] for feed in results.feeds] == ["(a) ", "(b) ", "(d1)", "(d2)", "(d) ", "(e) ", "(e')"]
    assert results.feed("(a)").rows == 5_000
    steps_per_pass = math.ceil(5_000 / bench.BATCH_SIZE)
    assert results.feed("(d1)").rows == results.feed("(d2)").rows == steps_per_pass * bench.BATCH_SIZE
    assert "(pyarrow → cache in the background" in results.feed("(d1)").note
    assert "+ Spark → cache" in results.feed("(d2)").note
    assert all(feed.seconds > 0 for feed in results.feeds)
    for run in results.training.values():
        assert run["examples"] == 2 * steps_per_pass * bench.BATCH_SIZE
        assert 0 < run["loss"] < 5
    ((size, limit_bytes, summary),) = results.rss_runs
    assert size == 3_000 and limit_bytes == int(0.1 * 2**20) and summary["rows"] == 3_000
    assert summary["cache_spilled"] == [True]
    assert summary["feed_path"] == "parquet-direct"
    assert summary["peak_rss_bytes"][0] > 0
    report = bench.markdown_report(results)
    for name in ("(a) TFoS", "(b) toPandas", "(c) petastorm", "(d1) tfspark", "(d2) tfspark", "(e) pyarrow",
                 "Targets"):
        assert name in report
    assert set(bench.TARGETS) <= set(results.ratios)
    assert len(results.round_ratios) == 1
    ((rows, limit, direct),) = results.scaling
    assert (rows, limit.rows, direct.rows) == (3_000, 2 * bench.BATCH_SIZE, 3 * bench.BATCH_SIZE)
    assert "| 3,000 |" in report and "first pass against (e) by size" in report
