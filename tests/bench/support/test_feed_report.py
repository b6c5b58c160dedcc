"""The feed benchmark's report: target checks and tables from given figures (no Spark, no TensorFlow)."""

from __future__ import annotations

from bench.harness import Measurement
from bench.support import feed_report

FEEDS = [Measurement("(a) TFoS-style", 1000, 10.0), Measurement("(b) toPandas", 1000, 2.0),
         Measurement("(d1) tfspark feed, direct Parquet, first pass", 1024, 0.5, "start 0.10s; best of 2 (1–2)"),
         Measurement("(d2) tfspark feed, Spark → Arrow, first pass", 1024, 1.0),
         Measurement("(d) tfspark feed, cached passes", 1024, 0.25, "from the cache"),
         Measurement("(e) pyarrow → numpy → tf.data (limit)", 1000, 0.4),
         Measurement("(e') as (e), .batch(1024) idiom", 1000, 1.0, "reference")]
TRAINING = {"numpy": {"examples": 2048, "seconds": 1.0, "loss": 1.5}, "arrow": {"examples": 2048, "seconds": 2.0,
                                                                                  "loss": 1.25}}
SUMMARY = {"workers": 1, "feed_path": "parquet-direct", "worker_rows": [3000], "cache_spilled": [True],
           "peak_rss_bytes": [300 * 2**20]}


def test_a_target_is_met_only_when_the_best_rounds_and_the_median_round_agree():
    assert feed_report.ratio_line("r", 12.0, [11.0, 12.0, 9.0], 10.0).endswith("— met")
    assert feed_report.ratio_line("r", 8.0, [8.0, 7.0], 10.0).endswith("— NOT met")
    assert feed_report.ratio_line("r", 12.0, [12.0, 6.0, 7.0], 10.0).endswith("— inconclusive (the rounds disagree)")
    assert feed_report.ratio_line("r", 0.5, [0.5], None) == "- r: 0.50×"


def test_the_report_has_every_table_and_target():
    results = feed_report.BenchmarkResults(
        rows=1000, epochs=2, repeat=1, feeds=FEEDS, petastorm="not checked", training=TRAINING,
        rss_runs=[(3000, 2**20, SUMMARY)], rss_workers=1, round_ratios=[feed_report.target_ratios(FEEDS, TRAINING)],
        scaling=[(3000, FEEDS[5], FEEDS[2])])
    assert results.ratios["feed_vs_tfos"] == (1024 / 0.5) / (1000 / 10.0)
    report = feed_report.markdown_report(results).splitlines()
    assert "| (c) petastorm make_spark_converter | – | – | – | – | – | not checked |" in report
    assert "| (b) toPandas | 1,000 | 2.00 | 500 | 5.00× | 0.20× |  |" in report
    assert "| tfspark feed (cache; direct Parquet) | 2,048 | 2.00 | 1,024 | 0.50× | 1.2500 | 1,024 |" in report
    assert "| 3,000 | 1 | parquet-direct | 3,000 | 1 MiB | yes | 300 |" in report
    assert "| 3,000 | 0.40 | 0.50 | 0.82× | start 0.10s |" in report
    assert "- FM training (d) / in-memory numpy: 0.50× (target ≥ 0.9×) — NOT met" in report
