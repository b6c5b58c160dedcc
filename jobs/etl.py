"""Spark ETL: raw rating events → deduplicated ratings placed by event date, joined with the movie catalog.

See docs/etl-and-features.md (late events, duplicates, data quality, counts).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from lakeloop.data_quality import (
    DEFAULT_MAX_RATING_DRIFT,
    DEFAULT_MIN_ROWS,
    FAIL,
    DataQualityError,
    check_severity,
    enforce,
)
from lakeloop.ingest.schema import RATINGS_SCHEMA
from lakeloop.lake import Lake, as_lake, window_days
from lakeloop.names import CURATED_RATINGS, RAW_RATINGS
from lakeloop.spark_jobs import (
    existing_partition_days,
    read_catalog,
    read_partitions,
    read_table,
    run_day_job,
    utc_date,
    write_day_partitions,
)

log = logging.getLogger("lakeloop.jobs.etl")
# The raw layout is what ingestion writes for the ratings topic: one definition, in lakeloop.ingest.
RAW_SCHEMA = {column.name: column.dataType.simpleString() for column in from_arrow_schema(RATINGS_SCHEMA.output_schema)}
CURATED_COLUMNS = ["event_id", "user_id", "item_id", "rating", "ts", "arrival_dt", "title", "year", "genres",
                   "in_catalog"]


@dataclass(frozen=True)
class EtlOptions:
    """The ETL's parameters (command-line flags of the job)."""

    lookback_days: int = field(default=3, metadata={"help": "past event days rewritten for late events"})
    min_rows: int = field(default=DEFAULT_MIN_ROWS, metadata={"help": "fewest raw rows the day must hold"})
    empty_input_severity: str = field(default=FAIL, metadata={"help": "fail or warn when the day has fewer rows"})
    max_rating_drift: float = field(default=DEFAULT_MAX_RATING_DRIFT, metadata={
        "help": "largest total variation distance between the day's rating histogram and the history's"})
    rating_drift_severity: str = field(default=FAIL, metadata={"help": "fail or warn when the drift is larger"})
    history_days: int = field(default=30, metadata={"help": "curated days before the day forming the history"})


def check_schema(spark: SparkSession, lake: Lake, day: date) -> None:
    """Fail on schema drift: the raw partition's columns and types must be exactly `RAW_SCHEMA`."""
    path = lake.spark_uri(lake.partition(RAW_RATINGS, day))
    found = {column.name: column.dataType.simpleString() for column in read_table(spark, lake, RAW_RATINGS, day).schema}
    missing = sorted(set(RAW_SCHEMA) - set(found))
    unexpected = sorted(set(found) - set(RAW_SCHEMA))
    retyped = {name: f"{RAW_SCHEMA[name]} -> {found[name]}" for name in RAW_SCHEMA
               if name in found and found[name] != RAW_SCHEMA[name]}
    if missing or unexpected or retyped:
        raise DataQualityError(f"schema drift in {path}: missing columns {missing}, unexpected columns "
                               f"{unexpected}, changed types {retyped} (expected {RAW_SCHEMA})")


def keep_first_copies(raw: DataFrame) -> DataFrame:
    """One row per `event_id`: the copy that arrived first (arrival day, event time, then values break ties)."""
    first = Window.partitionBy("event_id").orderBy("arrival_dt", "ts", "user_id", "item_id", "rating")
    return raw.withColumn("copy", F.row_number().over(first)).filter(F.col("copy") == 1).drop("copy")


def rating_histogram(ratings: DataFrame) -> dict[float, int]:
    """Rows per rating, ratings rounded to the half star (at most ten buckets reach the driver)."""
    bucketed = ratings.select((F.round(F.col("rating") * 2) / 2).alias("stars"))
    return {float(row["stars"]): int(row["count"]) for row in bucketed.groupBy("stars").count().collect()}


def total_variation(first: dict[float, int], second: dict[float, int]) -> float:
    """Total variation distance between two histograms (0: same shape, 1: disjoint)."""
    first_total, second_total = sum(first.values()), sum(second.values())
    return 0.5 * sum(abs(first.get(stars, 0) / first_total - second.get(stars, 0) / second_total)
                     for stars in set(first) | set(second))


def _mean(histogram: dict[float, int]) -> float:
    return sum(stars * rows for stars, rows in histogram.items()) / sum(histogram.values())


def check_rating_drift(day_ratings: DataFrame, history: DataFrame | None, max_drift: float,
                       severity: str = FAIL) -> dict:
    """Fail (or warn, by `severity`) when the day's rating histogram is further than `max_drift` from the
    history's; return the numbers."""
    day_histogram = rating_histogram(day_ratings)
    history_histogram = rating_histogram(history) if history is not None else {}
    if not day_histogram or not history_histogram:
        log.info("rating drift check skipped: %d rows today, %d rows of history", sum(day_histogram.values()),
                 sum(history_histogram.values()))
        return {"checked": False}
    report = {
        "checked": True,
        "total_variation": round(total_variation(day_histogram, history_histogram), 6),
        "max_total_variation": max_drift,
        "day_rows": sum(day_histogram.values()),
        "day_mean": round(_mean(day_histogram), 4),
        "history_rows": sum(history_histogram.values()),
        "history_mean": round(_mean(history_histogram), 4),
    }
    report["passed"] = report["total_variation"] <= max_drift
    if not report["passed"]:
        report["severity"] = severity
        enforce(severity,
                f"rating distribution drift: total variation distance {report['total_variation']:.3f} > {max_drift} "
                f"between the day's {report['day_rows']} ratings (mean {report['day_mean']:.3f}, histogram "
                f"{dict(sorted(day_histogram.items()))}) and {report['history_rows']} ratings of history (mean "
                f"{report['history_mean']:.3f}, histogram {dict(sorted(history_histogram.items()))})",
                f"rerun the day with the run param max_rating_drift >= {report['total_variation']:.3f}, or "
                f"rating_drift_severity=warn (a manual run's or a backfill's config, e.g. "
                f"{{\"max_rating_drift\": {min(1.0, round(report['total_variation'] + 0.005, 2))}}})")
    else:
        log.info("rating drift check passed: %s", report)
    return report


def _history(spark: SparkSession, lake: Lake, day: date, history_days: int) -> DataFrame | None:
    days = existing_partition_days(lake, CURATED_RATINGS, window_days(day - timedelta(days=1), history_days))
    return read_partitions(spark, lake, CURATED_RATINGS, days) if days else None


def run(spark: SparkSession, lake: Lake | Path, day: date, options: EtlOptions = EtlOptions()) -> dict:
    """Curate the event days [day - lookback, day] from the raw partitions; return the run's manifest."""
    check_severity("empty_input_severity", options.empty_input_severity)
    check_severity("rating_drift_severity", options.rating_drift_severity)
    lake = as_lake(lake)
    movies = read_catalog(spark, lake)
    raw_day_url = lake.spark_uri(lake.partition(RAW_RATINGS, day))
    raw_days = existing_partition_days(lake, RAW_RATINGS, window_days(day, options.lookback_days + 2))
    if day not in raw_days:
        raise FileNotFoundError(f"{raw_day_url} does not exist: run ingest_ratings for {day} first")
    for raw_day in raw_days:
        check_schema(spark, lake, raw_day)
    raw = read_partitions(spark, lake, RAW_RATINGS, raw_days).withColumnRenamed("dt", "arrival_dt").cache()
    rows_by_arrival = {row["arrival_dt"]: row["count"] for row in raw.groupBy("arrival_dt").count().collect()}
    if rows_by_arrival.get(day, 0) < options.min_rows:
        enforce(options.empty_input_severity,
                f"empty input: {raw_day_url} holds {rows_by_arrival.get(day, 0)} rows, fewer than the minimum of "
                f"{options.min_rows}",
                "rerun the day with the run param min_rows lowered or empty_input_severity=warn")

    kept = keep_first_copies(raw).withColumn("dt", utc_date("ts")).cache()
    drift = check_rating_drift(kept.filter(F.col("arrival_dt") == F.lit(day)),
                               _history(spark, lake, day, options.history_days), options.max_rating_drift,
                               options.rating_drift_severity)
    rewritten = window_days(day, options.lookback_days + 1)
    kept_by_day = {row["dt"]: row["count"] for row in kept.groupBy("dt").count().collect()}

    curated = (
        kept.filter(F.col("dt").between(F.lit(rewritten[0]), F.lit(day)))
        .join(F.broadcast(movies), on="item_id", how="left")
        .withColumn("in_catalog", F.col("title").isNotNull())
        .withColumn("genres", F.coalesce(F.col("genres"), F.array().cast("array<string>")))
        .select(*CURATED_COLUMNS, "dt")
    ).cache()
    counts: dict[date, dict] = {}
    for row in curated.groupBy("dt", "arrival_dt", "in_catalog").count().collect():
        entry = counts.setdefault(row["dt"], {"rows": 0, "rows_missing_from_catalog": 0, "rows_by_arrival_day": {}})
        entry["rows"] += row["count"]
        entry["rows_missing_from_catalog"] += 0 if row["in_catalog"] else row["count"]
        arrivals = entry["rows_by_arrival_day"]
        arrivals[str(row["arrival_dt"])] = arrivals.get(str(row["arrival_dt"]), 0) + row["count"]
    rows_in, rows_kept = sum(rows_by_arrival.values()), sum(kept_by_day.values())
    rows_out = sum(entry["rows"] for entry in counts.values())
    rows_in_range = sum(rows for event_day, rows in kept_by_day.items() if rewritten[0] <= event_day <= day)
    if rows_out != rows_in_range:
        raise RuntimeError(f"the catalog join changed the row count: {rows_in_range} events vs {rows_out} curated "
                           "rows (duplicate item ids in the catalog?)")
    summary = {
        "day": str(day),
        "raw_partitions_read": [str(raw_day) for raw_day in raw_days],
        "rewritten_days": [str(rewritten[0]), str(day)],
        "rows_in": rows_in,
        "duplicates_dropped": rows_in - rows_kept,
        "rows_outside_rewritten_days": rows_kept - rows_out,
        "rows_out": rows_out,
        "rows_missing_from_catalog": sum(entry["rows_missing_from_catalog"] for entry in counts.values()),
        "partitions_written": {str(event_day): entry["rows"] for event_day, entry in sorted(counts.items())},
        "rating_drift": drift,
    }
    day_summaries = {event_day: {"day": str(event_day), "written_by_run": str(day), **entry, "run": summary}
                     for event_day, entry in counts.items()}
    write_day_partitions(curated.repartition("dt").sortWithinPartitions("ts", "event_id"), lake, CURATED_RATINGS,
                         day_summaries)
    for frame in (curated, kept, raw):
        frame.unpersist()
    return summary


def main(argv: list[str] | None = None) -> None:
    """spark-submit entry point."""
    run_day_job(__doc__.splitlines()[0], "lakeloop-etl", run, EtlOptions, argv)


if __name__ == "__main__":
    main()
