"""The feed benchmark works end to end at a tiny size: every feed, FM training on the feed and on numpy, the RSS runs
and the scaling runs, then the report."""

from __future__ import annotations

import math

from bench import feed_benchmark
from bench.support.feed_report import TARGETS, markdown_report
from bench.support.rival_feeds import BATCH_SIZE


def test_the_whole_benchmark_runs_at_a_tiny_size(spark, tmp_path):
    results = feed_benchmark.run_benchmark(spark, tmp_path / "data", 5_000, [3_000], epochs=2, rss_workers=1,
                                           rss_cache_mb=0.1, quick=True, scaling_sizes=[3_000])

    assert [feed.name[:4] for feed in results.feeds] == ["(a) ", "(b) ", "(d1)", "(d2)", "(d) ", "(e) ", "(e')"]
    assert results.feed("(a)").rows == 5_000
    steps_per_pass = math.ceil(5_000 / BATCH_SIZE)
    assert results.feed("(d1)").rows == results.feed("(d2)").rows == steps_per_pass * BATCH_SIZE
    assert "(pyarrow → cache in the background" in results.feed("(d1)").note
    assert "+ Spark → cache" in results.feed("(d2)").note
    assert all(feed.seconds > 0 for feed in results.feeds)
    for run in results.training.values():
        assert run["examples"] == 2 * steps_per_pass * BATCH_SIZE
        assert 0 < run["loss"] < 5
    ((size, limit_bytes, summary),) = results.rss_runs
    assert size == 3_000 and limit_bytes == int(0.1 * 2**20) and summary["rows"] == 3_000
    assert summary["cache_spilled"] == [True]
    assert summary["feed_path"] == "parquet-direct"
    assert summary["peak_rss_bytes"][0] > 0
    report = markdown_report(results)
    for name in ("(a) TFoS", "(b) toPandas", "(c) petastorm", "(d1) tfspark", "(d2) tfspark", "(e) pyarrow",
                 "Targets"):
        assert name in report
    assert set(TARGETS) <= set(results.ratios)
    assert len(results.round_ratios) == 1
    ((rows, limit, direct),) = results.scaling
    assert (rows, limit.rows, direct.rows) == (3_000, 2 * BATCH_SIZE, 3 * BATCH_SIZE)
    assert "| 3,000 |" in report and "first pass against (e) by size" in report
