"""Spark features: the training window of curated ratings → factorization-machine inputs, split by time.

See docs/etl-and-features.md.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.window import WindowSpec

from lakeloop.features import (
    EVAL,
    FEATURE_COLUMNS,
    FEATURE_TABLES,
    GENRES,
    ITEM_HISTORY,
    ITEM_VOCAB,
    LABEL,
    OOV_INDEX,
    RATED_COLUMN,
    TRAIN,
    USER_HISTORY,
    USER_RATED,
    USER_VOCAB,
    YEAR_BUCKETS,
    FeatureSpec,
    feature_dataset,
)
from lakeloop.lake import Lake, as_lake, window_days
from lakeloop.names import CURATED_RATINGS
from lakeloop.spark_inputs import add_model_inputs
from lakeloop.spark_jobs import existing_partition_days, read_partitions, run_day_job, write_partition

EXAMPLE_COLUMNS = ["event_id", "user_id", "item_id", "ts", *FEATURE_COLUMNS, LABEL]


@dataclass(frozen=True)
class FeatureOptions:
    """The features job's parameters (command-line flags of the job)."""

    window_days: int = field(default=30, metadata={"help": "days of curated ratings ending on the day"})
    eval_fraction: float = field(default=0.1, metadata={"help": "most recent share of the window evaluated on"})
    min_count: int = field(default=1, metadata={"help": "training ratings an id needs to get its own index"})


@dataclass(frozen=True)
class FeatureTables:
    """A day's built features: the examples of each split, vocabularies, end-of-window history (statistics, and each
    user's rated movies), spec."""

    train: DataFrame
    eval: DataFrame
    user_vocab: DataFrame
    item_vocab: DataFrame
    user_history: DataFrame
    user_rated: DataFrame
    item_history: DataFrame
    spec: FeatureSpec
    cached: tuple[DataFrame, ...] = ()

    def release(self) -> None:
        """Drop the frames cached while building (once the tables are written)."""
        for frame in self.cached:
            frame.unpersist()

    def by_table(self) -> dict[str, DataFrame]:
        """The frames under their feature table names (`lakeloop.features.FEATURE_TABLES`)."""
        return {TRAIN: self.train, EVAL: self.eval, USER_VOCAB: self.user_vocab, ITEM_VOCAB: self.item_vocab,
                USER_HISTORY: self.user_history, USER_RATED: self.user_rated, ITEM_HISTORY: self.item_history}


def time_split(ratings: DataFrame, eval_fraction: float) -> tuple[DataFrame, int]:
    """Flag the most recent `eval_fraction` of the ratings (`is_eval`); return them and the cutoff (epoch ms)."""
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    event_ms = F.unix_millis(F.col("ts"))
    cutoff = ratings.select(F.percentile_approx(event_ms, 1 - eval_fraction, 100_000)).first()[0]
    if cutoff is None:
        raise ValueError("no curated ratings in the window")
    return ratings.withColumn("is_eval", event_ms >= F.lit(cutoff)), int(cutoff)


def fit_vocabulary(train: DataFrame, id_column: str, index_column: str, min_count: int) -> DataFrame:
    """Index the ids with at least `min_count` training ratings from 1 (in id order); 0 is left for OOV."""
    counts = train.groupBy(id_column).agg(F.count(F.lit(1)).alias("train_count"))
    kept = counts.filter(F.col("train_count") >= min_count)
    return kept.withColumn(index_column, F.row_number().over(Window.orderBy(id_column)).cast("long"))


def history_statistics(entity: str, counted: Column, window: WindowSpec | None = None) -> list[Column]:
    """The `<entity>_mean_rating` and `<entity>_rating_count` over the `counted` ratings (of the window, if any)."""
    ratings = F.when(counted, F.col("rating"))
    mean, count = F.avg(ratings), F.count(ratings)
    if window is not None:
        mean, count = mean.over(window), count.over(window)
    return [mean.cast("float").alias(f"{entity}_mean_rating"), count.cast("float").alias(f"{entity}_rating_count")]


def with_history_before(ratings: DataFrame, counted: Column) -> DataFrame:
    """Each rating with its user's and item's history: the `counted` ratings strictly before its time."""
    event_ms = F.unix_millis(F.col("ts"))
    columns = []
    for entity in ("user", "item"):
        before = Window.partitionBy(f"{entity}_id").orderBy(event_ms).rangeBetween(Window.unboundedPreceding, -1)
        columns += history_statistics(entity, counted, before)
    return ratings.select("*", *columns)


def build_features(ratings: DataFrame, min_count: int = 1) -> FeatureTables:
    """The feature tables of curated ratings flagged `is_eval`; fitted on the rows that are not."""
    train = ratings.filter(~F.col("is_eval"))
    stats = train.agg(F.count(F.lit(1)).alias("rows"), F.avg("rating").alias("mean"),
                      F.min("rating").alias("min"), F.max("rating").alias("max")).first()
    total = ratings.count()
    if not stats["rows"] or stats["rows"] == total:
        raise ValueError(f"the split left {stats['rows']} training rows of {total}: "
                         "both parts need ratings (widen the window or change eval_fraction)")
    user_vocab = fit_vocabulary(train, "user_id", "user_idx", min_count).cache()
    item_vocab = fit_vocabulary(train, "item_id", "item_idx", min_count).cache()
    spec = FeatureSpec(user_vocab_size=user_vocab.count() + 1, item_vocab_size=item_vocab.count() + 1,
                       prior_mean=float(stats["mean"]), rating_min=float(stats["min"]),
                       rating_max=float(stats["max"]))
    with_history = with_history_before(ratings, ~F.col("is_eval"))
    examples = (add_model_inputs(with_history, user_vocab, item_vocab, spec.prior_mean)
                .withColumn(LABEL, F.col("rating").cast("float"))
                .select(*EXAMPLE_COLUMNS, "is_eval")).cache()
    everything = F.lit(True)
    return FeatureTables(
        # Stored in a seeded random order: the training feed shuffles only within record batches.
        train=examples.filter(~F.col("is_eval")).drop("is_eval").orderBy(F.xxhash64("event_id")),
        eval=examples.filter(F.col("is_eval")).drop("is_eval"),
        user_vocab=user_vocab.orderBy("user_idx"),
        item_vocab=item_vocab.orderBy("item_idx"),
        user_history=ratings.groupBy("user_id").agg(*history_statistics("user", everything)),
        user_rated=ratings.groupBy("user_id").agg(F.array_sort(F.collect_set("item_id")).alias(RATED_COLUMN)),
        item_history=ratings.groupBy("item_id").agg(*history_statistics("item", everything)),
        spec=spec,
        cached=(user_vocab, item_vocab, examples),
    )


def write_features(tables: FeatureTables, lake: Lake, day: date, details: dict) -> dict:
    """Commit the day's feature tables, the train table last with the summary (counts, `details`, spec, the other
    tables' versions) that makes the day's tables one set for readers; return that summary."""
    counts = {"train": {}, "eval": {}}
    for name, frame in (("train", tables.train), ("eval", tables.eval)):
        row = frame.agg(F.count(F.lit(1)).alias("rows"),
                        F.sum((F.col("user_idx") == OOV_INDEX).cast("long")).alias("unknown_user"),
                        F.sum((F.col("item_idx") == OOV_INDEX).cast("long")).alias("unknown_item")).first()
        counts[name] = {"rows": row["rows"], "rows_unknown_user": row["unknown_user"] or 0,
                        "rows_unknown_item": row["unknown_item"] or 0}
    run = {"day": str(day), "features_run": uuid.uuid4().hex}  # tells this run's commits from an overlapping run's
    summary = {**run, **details, "rows_in": counts["train"]["rows"] + counts["eval"]["rows"],
                "train_rows": counts["train"]["rows"], "eval_rows": counts["eval"]["rows"],
                "eval_rows_unknown_user": counts["eval"]["rows_unknown_user"],
                "eval_rows_unknown_item": counts["eval"]["rows_unknown_item"],
                "genres": GENRES, "year_buckets": YEAR_BUCKETS, "spec": tables.spec.to_json()}
    frames = tables.by_table()
    versions = {table: write_partition(frames[table], lake, feature_dataset(table), day, run).version
                for table in FEATURE_TABLES if table != TRAIN}
    summary["table_versions"] = versions
    summary["table_version"] = write_partition(frames[TRAIN], lake, feature_dataset(TRAIN), day, summary).version
    return summary


def run(spark: SparkSession, lake: Lake | Path, day: date, options: FeatureOptions = FeatureOptions()) -> dict:
    """Build the day's features from the window's curated ratings; return the summary of their commit."""
    lake = as_lake(lake)
    days = existing_partition_days(lake, CURATED_RATINGS, window_days(day, options.window_days))
    curated = read_partitions(spark, lake, CURATED_RATINGS, days or [day]).drop("dt").cache()
    ratings, cutoff = time_split(curated, options.eval_fraction)
    details = {"window_days": options.window_days, "curated_days_read": [str(curated_day) for curated_day in days],
               "split": "time", "eval_fraction": options.eval_fraction,
               "eval_cutoff": datetime.fromtimestamp(cutoff / 1000, UTC).isoformat(), "min_count": options.min_count}
    tables = build_features(ratings, options.min_count)
    summary = write_features(tables, lake, day, details)
    tables.release()
    curated.unpersist()
    return summary


def main(argv: list[str] | None = None) -> None:
    """spark-submit entry point."""
    run_day_job(__doc__.splitlines()[0], "lakeloop-features", run, FeatureOptions, argv)


if __name__ == "__main__":
    main()
