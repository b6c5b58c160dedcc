"""Spark ETL: one day of raw rating events → curated ratings joined with the movie catalog.

Reads `<lake>/raw/ratings/dt=D/` and `<lake>/reference/movies/`, writes `<lake>/curated/ratings/dt=D/`.
No row is dropped: a rating whose movie is missing from the catalog is kept with null title/year and
empty genres, and counted in the manifest (`rows_in == rows_out`).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs.common import read_partitions, run_day_job, write_partition

RAW = "raw/ratings"
CURATED = "curated/ratings"


def run(spark: SparkSession, lake: Path, day: date) -> dict:
    """Curate one day's raw ratings; return the manifest written beside the partition."""
    raw = read_partitions(spark, lake, RAW, [day]).drop("dt")
    movies = spark.read.parquet(str(lake / "reference" / "movies"))
    curated = (
        raw.join(movies, on="item_id", how="left")
        .withColumn("in_catalog", F.col("title").isNotNull())
        .withColumn("genres", F.coalesce(F.col("genres"), F.array().cast("array<string>")))
        .select("event_id", "user_id", "item_id", "rating", "ts", "title", "year", "genres", "in_catalog")
    ).cache()
    rows_in = raw.count()
    rows_out = curated.count()
    missing = curated.filter(~F.col("in_catalog")).count()
    if rows_in != rows_out:
        raise RuntimeError(f"ETL changed the row count: {rows_in} raw vs {rows_out} curated (catalog has dup ids?)")
    manifest = {"day": str(day), "rows_in": rows_in, "rows_out": rows_out, "rows_missing_from_catalog": missing}
    write_partition(curated.coalesce(1), lake, CURATED, day, manifest)
    curated.unpersist()
    return manifest


def main(argv: list[str] | None = None) -> None:
    """spark-submit entry point."""
    run_day_job(__doc__.splitlines()[0], "lakeloop-etl", run, argv)


if __name__ == "__main__":
    main()
