"""Model quality on MovieLens 100K: the factorization machine next to the global-mean and user/item-bias baselines,
on a random 90/10 split (as published figures) and on the pipeline's own time split, all through the project's code;
with `--validate`, on a validation set carved from the random split's training ratings instead, for choosing
hyper-parameters without looking at the test ratings.

    .venv/bin/python -m bench.quality --ratings 5000 --hparam epochs=1   # a smoke run
    .venv/bin/python -m bench.quality --validate --hparam factors=64    # a hyper-parameter on validation

See docs/performance.md.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.harness import markdown_table, start_spark, work_directory
from bench.support.fm_training import train_in_process
from bench.support.movielens_lake import END_DAY, curate_days, replay_to_lake, time_split_features
from jobs import features
from lakeloop.evaluation import evaluate_model
from lakeloop.features import read_feature_summary
from lakeloop.fm_trainer import FMTrainer
from lakeloop.lake import as_lake, window_days
from lakeloop.names import CURATED_RATINGS
from lakeloop.spark_jobs import read_partitions

if TYPE_CHECKING:
    from pyspark.sql import Column, SparkSession

    from lakeloop.movielens import MovieLens

MODEL = "quality-fm"
TARGET_RANDOM_RMSE = 0.890
QUALITY_SPARK_CONF = {"spark.sql.shuffle.partitions": "4", "spark.python.worker.reuse": "true"}
TEST_PERCENT = 10
VALIDATION_PERCENT = 11
VALIDATION_SALT = "validation"
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
    popularity_ndcg_at_10: float


def hashed_share(seed: int, percent: int, salt: str | None = None) -> Column:
    """Whether a rating falls in the first `percent` of 100 buckets of a seeded hash of its event id (and `salt`: a
    different salt draws a share independent of the unsalted one)."""
    from pyspark.sql import functions as F

    keys = [F.lit(seed), *([F.lit(salt)] if salt else []), F.col("event_id")]
    return F.pmod(F.xxhash64(*keys), F.lit(100)) < percent


def random_split_features(spark: SparkSession, curated_lake: Path, lake: Path, days: int, seed: int,
                          validation: bool = False) -> None:
    """(a): the same curated ratings (the window's committed days of `curated_lake`), 10% chosen by a seeded hash of
    the event id, through `build_features`. With `validation`, (a)'s test ratings are dropped and its training ratings
    split again by a differently salted hash (`VALIDATION_PERCENT` of them evaluated on), so hyper-parameters chosen
    on it never saw a test rating."""
    curated = read_partitions(spark, as_lake(curated_lake), CURATED_RATINGS, window_days(END_DAY, days)).drop("dt")
    in_test = hashed_share(seed, TEST_PERCENT)
    if validation:
        ratings = curated.filter(~in_test).withColumn("is_eval", hashed_share(seed, VALIDATION_PERCENT,
                                                                             VALIDATION_SALT))
        details = {"split": "random-validation", "eval_fraction": VALIDATION_PERCENT / 100,
                   "test_fraction_dropped": TEST_PERCENT / 100}
    else:
        ratings = curated.withColumn("is_eval", in_test)
        details = {"split": "random", "eval_fraction": TEST_PERCENT / 100}
    tables = features.build_features(ratings)
    features.write_features(tables, lake, END_DAY, {**details, "seed": seed, "window_days": days})
    tables.release()


def train_and_evaluate(spark: SparkSession, name: str, lake: Path, hparams: dict[str, str]) -> SplitResult:
    """Train the FM on the lake's features of `END_DAY` and evaluate it with both baselines."""
    from lakeloop.models import model_dir

    trainer = FMTrainer(lake=str(lake), day=END_DAY.isoformat(), **hparams)
    examples = trainer.pre_train(spark).toArrow()
    started = time.monotonic()
    train_in_process(trainer, examples, model_dir(lake, MODEL, END_DAY))
    seconds = time.monotonic() - started
    metrics = evaluate_model(lake, MODEL, END_DAY)
    features_summary = read_feature_summary(lake, END_DAY)
    return SplitResult(name=name, train_rows=features_summary["train_rows"], eval_rows=features_summary["eval_rows"],
                       eval_rows_unknown_user=features_summary["eval_rows_unknown_user"], rmse=metrics["rmse"],
                       baseline_rmse=metrics["baseline_rmse"], bias_baseline_rmse=metrics["bias_baseline_rmse"],
                       train_seconds=seconds, ranking_users=metrics["ranking_users"],
                       **{key: metrics[key] for key in ("precision_at_10", "bias_baseline_precision_at_10",
                                                        "ndcg_at_10", "bias_baseline_ndcg_at_10",
                                                        "popularity_ndcg_at_10")})


def run_quality(spark: SparkSession, movielens: MovieLens, workdir: Path, days: int, seed: int,
                hparams: dict[str, str]) -> list[SplitResult]:
    """Both splits' results, (a) random then (b) time."""
    time_lake, random_lake = workdir / "time-split", workdir / "random-split"
    replay_to_lake(movielens, time_lake, days, END_DAY)
    time_split_features(spark, time_lake, days)
    random_split_features(spark, time_lake, random_lake, days, seed)
    return [train_and_evaluate(spark, f"(a) random 90/10, seed {seed}", random_lake, hparams),
            train_and_evaluate(spark, f"(b) time split, last 10% of {days} replayed days", time_lake, hparams)]


def validation_lake(spark: SparkSession, movielens: MovieLens, workdir: Path, days: int, seed: int) -> Path:
    """The replayed, curated ratings and the validation split of (a)'s training ratings (`random_split_features`
    with `validation`); the lake of the latter."""
    curated_lake, lake = workdir / "curated", workdir / "validation-split"
    replay_to_lake(movielens, curated_lake, days, END_DAY)
    curate_days(spark, curated_lake, days, END_DAY)
    random_split_features(spark, curated_lake, lake, days, seed, validation=True)
    return lake


def run_validation(spark: SparkSession, movielens: MovieLens, workdir: Path, days: int, seed: int,
                   hparams: dict[str, str]) -> SplitResult:
    """The FM and both baselines trained on (a)'s training ratings less a validation share, scored on that share."""
    lake = validation_lake(spark, movielens, workdir, days, seed)
    return train_and_evaluate(spark, f"(v) validation: {VALIDATION_PERCENT}% of (a)'s training ratings, seed {seed}",
                              lake, hparams)


def results_tables(results: list[SplitResult], hparams: dict) -> list[str]:
    """The RMSE table and the ranking table of the results, then the hyper-parameters and training times, as
    markdown lines."""
    lines = markdown_table(
        ["split", "train / eval rows", "eval rows of unknown users", "global mean", "user/item bias", "FM",
         "FM vs bias"],
        ([result.name, f"{result.train_rows:,} / {result.eval_rows:,}", f"{result.eval_rows_unknown_user:,}",
          f"{result.baseline_rmse:.4f}", f"{result.bias_baseline_rmse:.4f}", f"**{result.rmse:.4f}**",
          f"{result.rmse / result.bias_baseline_rmse:.3f}×"] for result in results), "lrrrrrr")
    lines += ["", *markdown_table(
        ["split", "users ranked", "precision@10 bias / FM", "NDCG@10 popularity / bias / FM"],
        ([result.name, f"{result.ranking_users:,}",
          f"{result.bias_baseline_precision_at_10:.4f} / {result.precision_at_10:.4f}",
          f"{result.popularity_ndcg_at_10:.4f} / {result.bias_baseline_ndcg_at_10:.4f} / **{result.ndcg_at_10:.4f}**"]
         for result in results), "lrrr")]
    return [*lines, "", f"FM hyper-parameters: {hparams}; training seconds: "
            + ", ".join(f"{result.train_seconds:.0f}" for result in results)]


def validation_report(result: SplitResult, hparams: dict) -> str:
    """The validation run's tables, hyper-parameters and training time (no verdicts: the targets are on the test
    ratings)."""
    return "\n".join(results_tables([result], hparams))


def markdown_report(results: list[SplitResult], hparams: dict) -> str:
    """The results tables and the verdicts on the two targets."""
    random_split, time_split = results
    lines = [*results_tables(results, hparams), "",
             f"- target (a) RMSE ≤ {TARGET_RANDOM_RMSE}: {random_split.rmse:.4f} — "
             + ("met" if random_split.rmse <= TARGET_RANDOM_RMSE else "NOT met"),
             f"- target (b) FM better than the user/item-bias baseline: {time_split.rmse:.4f} vs "
             f"{time_split.bias_baseline_rmse:.4f} — "
             + ("met" if time_split.rmse < time_split.bias_baseline_rmse else "NOT met"),
             f"- target (b) FM's NDCG@10 above both trivial rankings: {time_split.ndcg_at_10:.4f} vs popularity "
             f"{time_split.popularity_ndcg_at_10:.4f}, bias {time_split.bias_baseline_ndcg_at_10:.4f} — "
             + ("met" if time_split.ndcg_at_10 > max(time_split.popularity_ndcg_at_10,
                                                     time_split.bias_baseline_ndcg_at_10) else "NOT met"),
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
    args.add_argument("--validate", action="store_true",
                      help=f"train on (a)'s training ratings less {VALIDATION_PERCENT}%% of them and report on those "
                           "(for choosing hyper-parameters; the test ratings are not used)")
    return args


def main(argv: list[str] | None = None) -> list[SplitResult]:
    """Run both splits (or with `--validate` the validation split) on a local[2] Spark session and print the
    markdown report."""
    from lakeloop.config import load_settings
    from lakeloop.fm_model import FMHyperParameters
    from lakeloop.movielens import MovieLens, load_movielens

    options = parser().parse_args(argv)
    hparams = dict(pair.split("=", 1) for pair in options.hparam)
    movielens = load_movielens(load_settings().dataset_dir)
    if options.ratings:
        movielens = MovieLens(movielens.ratings.slice(0, options.ratings), movielens.movies)
    spark = start_spark("lakeloop quality benchmark", conf=QUALITY_SPARK_CONF)
    try:
        with work_directory(options.workdir, "lakeloop-quality-") as workdir:
            if options.validate:
                results = [run_validation(spark, movielens, workdir, options.days, options.seed, hparams)]
            else:
                results = run_quality(spark, movielens, workdir, options.days, options.seed, hparams)
    finally:
        spark.stop()
    params = FMHyperParameters.from_args(hparams).as_params()
    print(validation_report(results[0], params) if options.validate else markdown_report(results, params))
    return results


if __name__ == "__main__":
    main()
