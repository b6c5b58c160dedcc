"""Spark features: curated ratings → factorization-machine inputs, with a stable train/test split.

Writes `<lake>/features/ratings/dt=D/` with the model inputs `user_idx`, `item_idx`, `year_idx`,
`genres` (multi-hot, fixed length), the `label` (the rating) and `split` (`train` or `test`, 10% test by
a hash of `event_id`, so a rerun gives the same split). `fm_inputs` is reused by batch prediction.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.common import read_partitions, run_day_job, write_partition

CURATED = "curated/ratings"
FEATURES = "features/ratings"
USER_BUCKETS = 1 << 15
ITEM_BUCKETS = 1 << 15
YEAR_BUCKETS = 22
GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
          "War", "Western"]
TEST_FRACTION_PERCENT = 10
FEATURE_COLUMNS = ["user_idx", "item_idx", "year_idx", "genres"]


def hashed_index(column: str, buckets: int) -> Column:
    """A stable bucket for an id (the model's embedding row)."""
    return F.pmod(F.xxhash64(F.col(column).cast("string")), F.lit(buckets))


def year_index(column: str) -> Column:
    """Five-year buckets from 1920 (bucket 1) on; 0 for an unknown year."""
    bucket = F.least(F.greatest((F.col(column) - 1920) / 5, F.lit(0)), F.lit(YEAR_BUCKETS - 2)).cast("long") + 1
    return F.when(F.col(column).isNull(), F.lit(0)).otherwise(bucket)


def genre_multi_hot(column: str) -> Column:
    """A float array with 1.0 at each genre of the movie, in `GENRES` order."""
    return F.array(*[F.when(F.array_contains(F.col(column), name), F.lit(1.0)).otherwise(F.lit(0.0))
                     for name in GENRES]).cast("array<float>")


def fm_inputs(df: DataFrame) -> DataFrame:
    """Add the model's input columns to a frame holding `user_id`, `item_id`, `year` and `genres`."""
    return (df.withColumn("user_idx", hashed_index("user_id", USER_BUCKETS))
              .withColumn("item_idx", hashed_index("item_id", ITEM_BUCKETS))
              .withColumn("year_idx", year_index("year"))
              .withColumn("genres", genre_multi_hot("genres")))


def run(spark: SparkSession, lake: Path, day: date) -> dict:
    """Build one day's feature partition; return the manifest written beside it."""
    curated = read_partitions(spark, lake, CURATED, [day]).drop("dt")
    split = F.when(F.pmod(F.xxhash64(F.col("event_id"), F.lit("split")), F.lit(100)) < TEST_FRACTION_PERCENT,
                   F.lit("test")).otherwise(F.lit("train"))
    features = (fm_inputs(curated)
                .withColumn("label", F.col("rating").cast("float"))
                .withColumn("split", split)
                .select("event_id", "user_id", "item_id", *FEATURE_COLUMNS, "label", "split")).cache()
    counts = {row["split"]: row["count"] for row in features.groupBy("split").count().collect()}
    rows_in = curated.count()
    manifest = {"day": str(day), "rows_in": rows_in, "rows_out": sum(counts.values()),
                "train": counts.get("train", 0), "test": counts.get("test", 0)}
    write_partition(features.coalesce(1), lake, FEATURES, day, manifest)
    features.unpersist()
    return manifest


def main(argv: list[str] | None = None) -> None:
    """spark-submit entry point."""
    run_day_job(__doc__.splitlines()[0], "lakeloop-features", run, argv)


if __name__ == "__main__":
    main()
