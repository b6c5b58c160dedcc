"""Feeding a Spark DataFrame to TensorFlow: the tfspark feed against the alternatives side by side, then FM training
fed by it against in-memory numpy, and each worker's peak RSS with the spill cache.

    .venv/bin/python -m bench.feed_benchmark --quick      # a smoke run: 5,000 rows, one round

See docs/performance.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.harness import Measurement, best_of, parse_sizes, round_order, start_spark, tensorflow_import_seconds
from bench.support.feed_probe import (
    CACHED_PASSES,
    ArrowFeedProbe,
    best_training,
    cached_passes_result,
    examples_per_second,
    first_pass_result,
    run_probe,
)
from bench.support.feed_report import BenchmarkResults, markdown_report, target_ratios
from bench.support.rival_feeds import (
    TFoSStyleFeed,
    check_petastorm,
    measure_common_idiom,
    measure_pyarrow_limit,
    measure_to_pandas,
    warm_up_tensorflow,
)
from bench.support.synthetic_features import ensure_dataset
from tfspark.config import DEFAULT_CACHE_MEMORY_BYTES
from tfspark.driver.feed_plan import PARQUET_DIRECT, SPARK_ARROW

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

RSS_CACHE_MEMORY_MB = 32
FEED_ORDER = ("(a)", "(b)", "(d1)", "(d2)", CACHED_PASSES, "(e)", "(e')")


def run_benchmark(spark: SparkSession, data_dir: Path, rows: int, rss_sizes: list[int], *, epochs: int = 2,
                  repeat: int = 1, rss_workers: int = 2, rss_cache_mb: float = RSS_CACHE_MEMORY_MB,
                  quick: bool = False, scaling_sizes: list[int] | None = None) -> BenchmarkResults:
    """Measure every feed and FM training on (d) vs numpy `repeat` times, the RSS runs, then (d1) against (e)
    at each of `scaling_sizes`, on `spark`.

    The rounds interleave the alternatives (a machine shared with other work slows whatever runs while it
    is busy); the best round of each is kept. Progress is printed as it goes.
    """
    path = ensure_dataset(data_dir, rows)
    for size in rss_sizes:
        ensure_dataset(data_dir, size)
    tfos = TFoSStyleFeed(rounds=repeat)
    workdir = Path(tempfile.mkdtemp(prefix="feed-bench-"))
    feeds: dict[str, list[Measurement]] = {}
    training: dict[str, list[dict[str, Any]]] = {"numpy": [], "arrow": []}
    round_ratios: list[dict[str, float]] = []

    def record(result: Measurement) -> Measurement:
        feeds.setdefault(result.name, []).append(result)
        print(f"  {result.name}: {result.rows_per_second:,.0f} rows/s {result.note}", flush=True)
        return result

    try:
        petastorm = check_petastorm(quick)
        print(f"(c) petastorm: {petastorm}", flush=True)
        warm_up_tensorflow()
        frame = spark.read.parquet(str(path))
        for round_index in range(repeat):
            print(f"round {round_index + 1} of {repeat}", flush=True)
            this_round = [record(measure_pyarrow_limit(path)), record(measure_common_idiom(path)),
                          record(measure_to_pandas(frame)), record(tfos.measure(frame))]
            # (d1) trains the FM too; (d2) only needs its first pass. Their order alternates between rounds.
            for feed_path in round_order((PARQUET_DIRECT, SPARK_ARROW), round_index):
                if feed_path == PARQUET_DIRECT:
                    trainer = ArrowFeedProbe(str(path), epochs=epochs, train_fm=True,
                                             numpy_first=round_index % 2 == 0)
                    probe = run_probe(spark, trainer, workdir)
                    this_round += [record(first_pass_result(probe)), record(cached_passes_result(probe))]
                else:
                    spark_arrow = run_probe(spark, ArrowFeedProbe(str(path), epochs=1), workdir,
                                            feed_path=SPARK_ARROW)
                    this_round.append(record(first_pass_result(spark_arrow)))
            for source, run in probe["training"].items():
                training[source].append(run)
                print(f"  FM training on {source}: {examples_per_second(run):,.0f} examples/s", flush=True)
            round_ratios.append(target_ratios(this_round, probe["training"]))
        rss_runs = measure_rss_runs(spark, data_dir, rss_sizes, rss_workers, rss_cache_mb, quick=quick)
        scaling = [measure_first_pass_scaling(spark, data_dir, size, repeat, workdir) for size in scaling_sizes or []]
        import_seconds = None if quick else tensorflow_import_seconds()
    finally:
        tfos.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return BenchmarkResults(
        rows=rows,
        epochs=epochs,
        repeat=repeat,
        feeds=[best_of(rounds) for prefix in FEED_ORDER for name, rounds in feeds.items() if name.startswith(prefix)],
        petastorm=petastorm,
        training={source: best_training(runs) for source, runs in training.items()},
        rss_runs=rss_runs,
        rss_workers=rss_workers,
        round_ratios=round_ratios,
        scaling=scaling,
        tensorflow_import_seconds=import_seconds,
    )


def measure_rss_runs(spark: SparkSession, data_dir: Path, sizes: list[int], workers: int, cache_mb: float, *,
                     quick: bool = False) -> list[tuple[int, int, dict[str, Any]]]:
    """One pass over each size with `workers` workers and a `cache_mb` cache (spilling), plus the largest size
    with the default in-memory cache (not in a quick run): (rows, cache limit bytes, training summary)."""
    memory_only = [] if quick or not sizes else [(max(sizes), DEFAULT_CACHE_MEMORY_BYTES)]
    workdir = Path(tempfile.mkdtemp(prefix="feed-bench-rss-"))
    runs = []
    try:
        for size, limit_bytes in [(size, int(cache_mb * 2**20)) for size in sizes] + memory_only:
            trainer = ArrowFeedProbe(str(ensure_dataset(data_dir, size)), epochs=1)
            summary = run_probe(spark, trainer, workdir, workers, limit_bytes)
            runs.append((size, limit_bytes, summary))
            print(f"peak RSS at {size:,} rows, cache limit {limit_bytes / 2**20:g} MiB: "
                  f"{[round(peak / 2**20) for peak in summary['peak_rss_bytes']]} MiB per worker "
                  f"(spilled: {summary['cache_spilled']}, TensorFlow preloaded: {summary['tensorflow_preloaded']})",
                  flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return runs


def measure_first_pass_scaling(spark: SparkSession, data_dir: Path, rows: int, repeat: int,
                               workdir: Path) -> tuple[int, Measurement, Measurement]:
    """(e) and (d1)'s first pass on a `rows`-row table, interleaved `repeat` times; the best of each (a run's fixed
    costs, Spark's task start and a fresh worker's TensorFlow import, matter less the larger the table)."""
    path = ensure_dataset(data_dir, rows)
    limits, direct = [], []
    for round_index in range(repeat):
        limits.append(measure_pyarrow_limit(path))
        direct.append(first_pass_result(run_probe(spark, ArrowFeedProbe(str(path), epochs=1), workdir)))
        print(f"  scaling {rows:,} rows, round {round_index + 1}: (e) {limits[-1].seconds:.2f}s, "
              f"(d1) {direct[-1].seconds:.2f}s ({direct[-1].note})", flush=True)
    return rows, best_of(limits), best_of(direct)


def parser() -> argparse.ArgumentParser:
    """The command line."""
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("--rows", type=int, help="rows of the feed/training table (default 1,000,000; --quick 5,000)")
    args.add_argument("--rss-rows", type=parse_sizes, help="sizes of the RSS runs (default 1M,5M; --quick: --rows)")
    args.add_argument("--rss-workers", type=int, default=2, help="workers of the RSS runs")
    args.add_argument("--rss-cache-mb", type=float, default=RSS_CACHE_MEMORY_MB,
                      help="in-memory cache limit per worker in the RSS runs (spills past it)")
    args.add_argument("--scaling-rows", type=parse_sizes, default=[],
                      help="sizes at which (d1)'s first pass is also measured against (e) alone, e.g. 5000000,10000000")
    args.add_argument("--epochs", type=int, default=2, help="feed passes and FM training epochs (at least 2)")
    args.add_argument("--repeat", type=int, help="rounds of the feed and training comparison, best kept "
                                                 "(default 3; --quick 1)")
    args.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "lakeloop-feed-bench",
                      help="where the generated Parquet tables are kept and reused")
    args.add_argument("--quick", action="store_true", help="smoke run: 5,000 rows, one round, no installer check")
    return args


def main(argv: list[str] | None = None) -> BenchmarkResults:
    """Run the benchmark on its own local[2] session and print the markdown report."""
    options = parser().parse_args(argv)
    rows = options.rows or (5_000 if options.quick else 1_000_000)
    rss_sizes = options.rss_rows or ([rows] if options.quick else [1_000_000, 5_000_000])
    spark = start_spark("lakeloop feed benchmark", preload_tensorflow=True)
    try:
        results = run_benchmark(spark, options.data_dir, rows, [], epochs=max(options.epochs, 2),
                                repeat=options.repeat or (1 if options.quick else 3), quick=options.quick,
                                scaling_sizes=options.scaling_rows)
    finally:
        spark.stop()
    spark = start_spark("lakeloop feed benchmark", preload_tensorflow=False)
    try:
        rss_runs = measure_rss_runs(spark, options.data_dir, rss_sizes, options.rss_workers, options.rss_cache_mb,
                                    quick=options.quick)
    finally:
        spark.stop()
    results = dataclasses.replace(results, rss_runs=rss_runs, rss_workers=options.rss_workers)
    print("\n" + markdown_report(results), flush=True)
    return results


if __name__ == "__main__":
    main()
