"""Spark ETL: one day of raw rating events → curated ratings joined with the movie catalog.

Reads `<lake>/raw/ratings/dt=D/` and `<lake>/reference/movies/`, writes `<lake>/curated/ratings/dt=D/`.
No row is dropped: a rating whose movie is missing from the catalog is kept with null title/year and
empty genres, and counted in the manifest (`rows_in == rows_out`).
"""

from __future__ import annotations

from pyspark.sql import functions as F

from jobs.common import day_job_parser, lake_path, read_partitions, spark_session, write_partition

RAW = "raw/ratings"
CURATED = "curated/ratings"


def main(argv: list[str] | None = None) -> None:
    """Run the ETL for one day."""
    args = day_job_parser(__doc__.splitlines()[0]).parse_args(argv)
    lake = lake_path(args.lake)
    spark = spark_session(f"lakeloop-etl-{args.day}")
    raw = read_partitions(spark, lake, RAW, [args.day]).drop("dt")
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
    write_partition(curated.coalesce(1), lake, CURATED, args.day,
                    {"day": str(args.day), "rows_in": rows_in, "rows_out": rows_out,
                     "rows_missing_from_catalog": missing})
    spark.stop()


if __name__ == "__main__":
    main()
