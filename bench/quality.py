"""Model quality on MovieLens 100K: the factorization machine next to the global-mean and user/item-bias
baselines, on two splits, all computed in one run.

(a) random 90/10 split: each rating is an evaluation rating when a seeded hash of its event id falls in the
    first 10% (fixed `--seed`), the usual protocol of published MovieLens figures.
(b) the pipeline's time split: the data set replayed onto `--days` days as raw partitions, curated by
    `jobs.etl` day by day, and `jobs.features` run for the last day with a window over all of them, so its
    most recent 10% of ratings by time is the evaluation set (new users and items included).

Both splits go through the project's own code: `jobs.features.build_features` (vocabularies and history
statistics fitted on the training part only), `lakeloop.fm_trainer.FMTrainer` (its `pre_train`, and its `train`
on the tfspark Arrow feed and training loop, in this process on one worker), and
`lakeloop.evaluation.evaluate_model`, which scores the FM and both baselines on the evaluation set.

    .venv/bin/python bench/quality.py                              # the whole data set, default hyper-parameters
    .venv/bin/python bench/quality.py --hparam epochs=15 --hparam factors=64
    .venv/bin/python bench/quality.py --ratings 5000 --hparam epochs=1   # a smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs import etl, features
from lakeloop.evaluation import evaluate_model
from lakeloop.features import read_feature_manifest
from lakeloop.fm_trainer import FMTrainer
from lakeloop.ingest import RATINGS_SCHEMA
from lakeloop.lake import atomic_partition, partition_path, window_days
from lakeloop.replay import build_events, write_catalog

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from lakeloop.movielens import MovieLens

MODEL = "quality-fm"
END_DAY = date(2026, 11, 20)
TARGET_RANDOM_RMSE = 0.91
PUBLISHED = "published 5-fold RMSE on ML-100K: Surprise SVD 0.934, SVD++ 0.919, BaselineOnly 0.944; GC-MC 0.905"


@dataclass(frozen=True)
class SplitResult:
    """One split's figures: rows, RMSE of the FM and of both baselines, top-10 ranking quality of the FM and
    of the bias baseline, training time."""

    name: str
    train_rows: int
    eval_rows: int
    eval_rows_unknown_user: int
    rmse: float
    baseline_rmse: float
    bias_baseline_rmse: float
    train_seconds: float
    ranking_users: int
    precision_at_10: float
    bias_baseline_precision_at_10: float
    ndcg_at_10: float
    bias_baseline_ndcg_at_10: float


def raw_table(events: pa.Table) -> pa.Table:
    """Replay events (`lakeloop.replay.build_events`) in the raw lake schema ingestion writes."""
    return events.cast(RATINGS_SCHEMA.output_schema)


def write_raw_day(lake: Path, day: date, raw: pa.Table) -> Path:
    """Write `raw` as the raw partition of `day`, as ingestion would have (events arrived that day)."""
    final = partition_path(lake, etl.RAW, day)
    with atomic_partition(final) as staged:
        pq.write_table(raw, staged / "part-0.parquet")
    return final


def replay_to_lake(movielens: MovieLens, lake: Path, days: int, end_day: date) -> list[date]:
    """The catalog and one raw partition per day, each holding the events of that day (as the replay maps them)."""
    write_catalog(movielens, lake)
    raw = raw_table(build_events(movielens, days, end_day))
    event_day = pc.cast(raw["ts"], pa.date32())
    replayed = window_days(end_day, days)
    for day in replayed:
        write_raw_day(lake, day, raw.filter(pc.equal(event_day, pa.scalar(day, pa.date32()))))
    return replayed


def time_split_features(spark: SparkSession, lake: Path, days: int) -> None:
    """(b): ETL for every replayed day, then the features job for the last day over the whole window."""
    for day in window_days(END_DAY, days):
        etl.run(spark, lake, day)
    features.run(spark, lake, END_DAY, features.FeatureOptions(window_days=days))


def random_split_features(spark: SparkSession, curated_lake: Path, lake: Path, days: int, seed: int) -> None:
    """(a): the same curated ratings, 10% chosen by a seeded hash of the event id, through `build_features`."""
    from pyspark.sql import functions as F

    curated = spark.read.parquet(str(curated_lake / etl.CURATED)).drop("dt")
    in_eval = F.pmod(F.xxhash64(F.lit(seed), F.col("event_id")), F.lit(100)) < 10
    tables = features.build_features(curated.withColumn("is_eval", in_eval))
    features.write_features(tables, lake, END_DAY, {"split": "random", "eval_fraction": 0.1, "seed": seed,
                                                    "window_days": days})
    tables.release()


SPARK_ARROW_BATCH_ROWS = 10_000


def train_in_process(trainer: FMTrainer, examples: pa.Table, output_dir: Path) -> dict:
    """Run `trainer.train` as one tfspark worker on the direct Parquet path would: record batches of Spark's
    10,000 rows filled into the cache in the background, the first epoch in arrival order, one device, the
    runtime's loop."""
    import tensorflow as tf

    from tfspark.feed import ArrowCache, BackgroundFill, BatchFeed
    from tfspark.rendezvous import plan_steps
    from tfspark.trainer import TrainContext

    plan = plan_steps([examples.num_rows], trainer.batch_size, trainer.epochs)
    with ArrowCache() as cache, tempfile.TemporaryDirectory() as checkpoints:
        fill = BackgroundFill(examples.to_batches(max_chunksize=SPARK_ARROW_BATCH_ROWS), cache,
                              examples.num_rows).start()
        feed = BatchFeed(cache, trainer.label_column, plan.per_worker_batch_size, plan.total_steps,
                         shuffle=trainer.shuffle, seed=trainer.seed, fill=fill)
        ctx = TrainContext(strategy=tf.distribute.OneDeviceStrategy("/cpu:0"), rank=0, num_workers=1,
                           steps_per_epoch=plan.steps_per_epoch, epochs=plan.epochs,
                           batch_size=plan.global_batch_size, per_worker_batch_size=plan.per_worker_batch_size,
                           checkpoint_dir=checkpoints, output_dir=str(output_dir), checkpoint_every=plan.total_steps,
                           log_every=plan.steps_per_epoch, rows=examples.num_rows, feed=feed)
        try:
            return trainer.train(feed.dataset(), ctx)
        finally:
            fill.close()


def train_and_evaluate(spark: SparkSession, name: str, lake: Path, hparams: dict[str, str]) -> SplitResult:
    """Train the FM on the lake's feature partition of `END_DAY` and evaluate it with both baselines."""
    from lakeloop.models import model_dir

    trainer = FMTrainer(lake=str(lake), day=END_DAY.isoformat(), **hparams)
    examples = trainer.pre_train(spark).toArrow()
    started = time.monotonic()
    train_in_process(trainer, examples, model_dir(lake, MODEL, END_DAY))
    seconds = time.monotonic() - started
    metrics = evaluate_model(lake, MODEL, END_DAY)
    manifest = read_feature_manifest(lake, END_DAY)
    return SplitResult(name=name, train_rows=manifest["train_rows"], eval_rows=manifest["eval_rows"],
                       eval_rows_unknown_user=manifest["eval_rows_unknown_user"], rmse=metrics["rmse"],
                       baseline_rmse=metrics["baseline_rmse"], bias_baseline_rmse=metrics["bias_baseline_rmse"],
                       train_seconds=seconds, ranking_users=metrics["ranking_users"],
                       **{key: metrics[key] for key in ("precision_at_10", "bias_baseline_precision_at_10",
                                                        "ndcg_at_10", "bias_baseline_ndcg_at_10")})


def run_quality(spark: SparkSession, movielens: MovieLens, workdir: Path, days: int, seed: int,
                hparams: dict[str, str]) -> list[SplitResult]:
    """Both splits' results, (a) random then (b) time."""
    time_lake, random_lake = workdir / "time-split", workdir / "random-split"
    replay_to_lake(movielens, time_lake, days, END_DAY)
    time_split_features(spark, time_lake, days)
    random_split_features(spark, time_lake, random_lake, days, seed)
    return [train_and_evaluate(spark, f"(a) random 90/10, seed {seed}", random_lake, hparams),
            train_and_evaluate(spark, f"(b) time split, last 10% of {days} replayed days", time_lake, hparams)]


def markdown_report(results: list[SplitResult], hparams: dict) -> str:
    """The results table and the verdicts on the two targets."""
    lines = ["| split | train / eval rows | eval rows of unknown users | global mean | user/item bias | FM "
             "| FM vs bias |", "|---|--:|--:|--:|--:|--:|--:|"]
    for result in results:
        lines.append(f"| {result.name} | {result.train_rows:,} / {result.eval_rows:,} | "
                     f"{result.eval_rows_unknown_user:,} | {result.baseline_rmse:.4f} | "
                     f"{result.bias_baseline_rmse:.4f} | **{result.rmse:.4f}** | "
                     f"{result.rmse / result.bias_baseline_rmse:.3f}× |")
    lines += ["", "| split | users ranked | precision@10 bias / FM | NDCG@10 bias / FM |", "|---|--:|--:|--:|"]
    lines += [f"| {result.name} | {result.ranking_users:,} | {result.bias_baseline_precision_at_10:.4f} / "
              f"{result.precision_at_10:.4f} | {result.bias_baseline_ndcg_at_10:.4f} / {result.ndcg_at_10:.4f} |"
              for result in results]
    random_split, time_split = results
    lines += ["", f"FM hyper-parameters: {hparams}; training seconds: "
              + ", ".join(f"{result.train_seconds:.0f}" for result in results), "",
              f"- target (a) RMSE ≤ {TARGET_RANDOM_RMSE}: {random_split.rmse:.4f} — "
              + ("met" if random_split.rmse <= TARGET_RANDOM_RMSE else "NOT met"),
              f"- target (b) FM better than the user/item-bias baseline: {time_split.rmse:.4f} vs "
              f"{time_split.bias_baseline_rmse:.4f} — "
              + ("met" if time_split.rmse < time_split.bias_baseline_rmse else "NOT met"),
              f"- for reference, {PUBLISHED}"]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    """The command line."""
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("--days", type=int, default=3, help="days the data set is replayed onto for (b)")
    args.add_argument("--seed", type=int, default=42, help="seed of the random split (a)")
    args.add_argument("--ratings", type=int, help="use only the first N ratings (smoke runs)")
    args.add_argument("--hparam", action="append", default=[], metavar="NAME=VALUE",
                      help="override an FM hyper-parameter (lakeloop.fm_model.FMHyperParameters)")
    args.add_argument("--workdir", type=Path, help="where the lakes go (default: a fresh temp dir)")
    return args


def main(argv: list[str] | None = None) -> list[SplitResult]:
    """Run both splits on a local[2] Spark session and print the markdown report."""
    from pyspark.sql import SparkSession

    from lakeloop.config import load_settings
    from lakeloop.fm_model import FMHyperParameters
    from lakeloop.movielens import MovieLens, load_movielens

    options = parser().parse_args(argv)
    hparams = dict(pair.split("=", 1) for pair in options.hparam)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    movielens = load_movielens(load_settings().dataset_dir)
    if options.ratings:
        movielens = MovieLens(movielens.ratings.slice(0, options.ratings), movielens.movies)
    spark = (SparkSession.builder.master("local[2]").appName("lakeloop quality benchmark")
             .config("spark.sql.shuffle.partitions", "4").config("spark.ui.enabled", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="lakeloop-quality-"))
    try:
        results = run_quality(spark, movielens, workdir, options.days, options.seed, hparams)
    finally:
        spark.stop()
    print(markdown_report(results, FMHyperParameters.from_args(hparams).as_params()))
    return results


if __name__ == "__main__":
    main()
