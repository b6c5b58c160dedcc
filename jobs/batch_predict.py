"""Spark batch prediction: the top-k unseen movies per user, scored by the `champion` model.

Users are those of the day's feature window (`<lake>/features/dt=D/`); candidates are every catalog movie a
user has not rated in that window. Their inputs are built by `jobs.features.serving_inputs` — the same
transformation as the training examples, with the partition's vocabularies and history statistics as of
the end of the window. The model is resolved from the MLflow alias once on the driver, downloaded, and loaded
once per Python worker; each partition is scored as Arrow batches (`mapInArrow`), no per-row Python.
Writes `<lake>/predictions/dt=D/` (`user_id`, `item_id`, `score`, `rank`, `model_version`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path

import pyarrow as pa
from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

from jobs.common import MOVIES, run_day_job, write_partition
from jobs.feature_spec import EVAL, FEATURE_COLUMNS, TRAIN, USER_HISTORY, feature_table_path
from jobs.features import serving_inputs
from lakeloop.evaluation import model_inputs

PREDICTIONS = "predictions"
SCORED_SCHEMA = "user_id string, item_id string, score double"


@dataclass(frozen=True)
class PredictOptions:
    """The batch prediction's parameters (command-line flags of the job)."""

    model_name: str = field(metadata={"help": "registered model name"})
    alias: str = field(default="champion", metadata={"help": "registry alias of the version to score with"})
    top_k: int = field(default=10, metadata={"help": "movies kept per user"})


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


def run(spark: SparkSession, lake: Path, day: date, options: PredictOptions) -> dict:
    """Score and write the day's top-k predictions; return the manifest."""
    import mlflow
    from mlflow import MlflowClient

    version = MlflowClient().get_model_version_by_alias(options.model_name, options.alias)
    local_model = mlflow.artifacts.download_artifacts(f"models:/{options.model_name}/{version.version}")

    def table(name: str):
        return spark.read.parquet(str(feature_table_path(lake, day, name)))

    rated = table(TRAIN).select("user_id", "item_id").union(table(EVAL).select("user_id", "item_id")).distinct()
    movies = spark.read.parquet(str(lake / MOVIES)).select("item_id", "year", "genres")
    pairs = table(USER_HISTORY).select("user_id").crossJoin(movies).join(rated, ["user_id", "item_id"], "left_anti")
    candidates = (serving_inputs(spark, lake, day, pairs).select("user_id", "item_id", *FEATURE_COLUMNS)
                  .repartition(spark.sparkContext.defaultParallelism))
    scored = candidates.mapInArrow(score_batches(local_model), SCORED_SCHEMA)
    by_score = Window.partitionBy("user_id").orderBy(F.col("score").desc(), F.col("item_id"))
    top = (scored.withColumn("rank", F.row_number().over(by_score)).filter(F.col("rank") <= options.top_k)
           .withColumn("model_version", F.lit(str(version.version)))
           .select("user_id", "item_id", "score", "rank", "model_version")).cache()
    manifest = {"day": str(day), "model_name": options.model_name, "alias": options.alias,
                "model_version": str(version.version), "users": top.select("user_id").distinct().count(),
                "rows": top.count(), "top_k": options.top_k}
    write_partition({"": top.coalesce(1)}, lake, PREDICTIONS, day, manifest)
    top.unpersist()
    return manifest


def main(argv: list[str] | None = None) -> None:
    """spark-submit entry point."""
    run_day_job(__doc__.splitlines()[0], "lakeloop-batch-predict", run, PredictOptions, argv)


if __name__ == "__main__":
    # Run through the importable module, so Python workers can unpickle the scoring function by reference.
    from jobs.batch_predict import main as batch_predict_main

    batch_predict_main()
