"""Spark batch prediction: the top-10 unseen movies per user, scored by the `champion` model.

Candidates are every catalog movie a user has not rated in the window; users are those active in the
window. The model is resolved from the MLflow alias once on the driver, downloaded, and loaded once per
Python worker; each partition is scored as Arrow batches (`mapInArrow`), no per-row Python.
Writes `<lake>/predictions/dt=D/` (`user_id`, `item_id`, `score`, `rank`, `model_version`).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import pyarrow as pa
from pyspark.sql import Window
from pyspark.sql import functions as F

from jobs.common import day_job_parser, lake_path, read_partitions, spark_session, write_partition
from jobs.features import FEATURE_COLUMNS, fm_inputs
from lakeloop.evaluation import model_inputs
from lakeloop.lake import window_days

CURATED = "curated/ratings"
PREDICTIONS = "predictions"
SCORED_SCHEMA = "user_id string, item_id string, score double"


@lru_cache(maxsize=1)
def _load_model(local_path: str):
    import mlflow.tensorflow

    return mlflow.tensorflow.load_model(local_path)


def score_batches(local_model_path: str):
    """A `mapInArrow` function scoring candidate rows with the model at `local_model_path`."""

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import numpy as np

        model = _load_model(local_model_path)
        for batch in batches:
            if batch.num_rows == 0:
                continue
            predictions = model.predict(model_inputs(batch), batch_size=8192, verbose=0)
            scores = np.asarray(predictions).reshape(-1).astype(np.float64)
            yield pa.RecordBatch.from_arrays([batch.column("user_id"), batch.column("item_id"), pa.array(scores)],
                                             names=["user_id", "item_id", "score"])

    return score


def main(argv: list[str] | None = None) -> None:
    """Score and write the day's top-k predictions."""
    parser = day_job_parser(__doc__.splitlines()[0])
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--window-days", type=int, default=30)
    parser.add_argument("--top-k", type=int, default=10)
    args = parser.parse_args(argv)

    import mlflow
    from mlflow import MlflowClient

    lake = lake_path(args.lake)
    spark = spark_session(f"lakeloop-batch-predict-{args.day}")
    version = MlflowClient().get_model_version_by_alias(args.model_name, args.alias)
    local_model = mlflow.artifacts.download_artifacts(f"models:/{args.model_name}/{version.version}")

    rated = read_partitions(spark, lake, CURATED, window_days(args.day, args.window_days)).select("user_id", "item_id")
    movies = spark.read.parquet(str(lake / "reference" / "movies")).select("item_id", "year", "genres")
    users = rated.select("user_id").distinct()
    candidates = fm_inputs(users.crossJoin(movies).join(rated.distinct(), ["user_id", "item_id"], "left_anti"))
    candidates = (candidates.select("user_id", "item_id", *FEATURE_COLUMNS)
                  .repartition(spark.sparkContext.defaultParallelism))
    scored = candidates.mapInArrow(score_batches(local_model), SCORED_SCHEMA)
    by_score = Window.partitionBy("user_id").orderBy(F.col("score").desc(), F.col("item_id"))
    top = (scored.withColumn("rank", F.row_number().over(by_score)).filter(F.col("rank") <= args.top_k)
           .withColumn("model_version", F.lit(str(version.version)))
           .select("user_id", "item_id", "score", "rank", "model_version")).cache()
    users_scored = top.select("user_id").distinct().count()
    rows = top.count()
    write_partition(top.coalesce(1), lake, PREDICTIONS, args.day,
                    {"day": str(args.day), "model_name": args.model_name, "alias": args.alias,
                     "model_version": str(version.version), "users": users_scored, "rows": rows, "top_k": args.top_k})
    spark.stop()


if __name__ == "__main__":
    # Run through the importable module, so Python workers can unpickle the scoring function by reference.
    from jobs.batch_predict import main as batch_predict_main

    batch_predict_main()
