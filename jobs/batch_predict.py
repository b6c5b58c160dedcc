"""Spark batch prediction: the top-k unseen movies per user, scored by the registry's `champion`, written
to `<lake>/predictions/dt=D/`.

See docs/evaluation-and-registry.md (batch predictions).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache
from pathlib import Path

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from lakeloop.features import EVAL, FEATURE_COLUMNS, FEATURES, TRAIN, USER_HISTORY, model_inputs
from lakeloop.lake import Lake, as_lake
from lakeloop.names import PREDICTIONS
from lakeloop.registry import aliased_version
from lakeloop.spark_inputs import serving_inputs
from lakeloop.spark_jobs import read_catalog, read_table, run_day_job

log = logging.getLogger(__name__)
SCORED_SCHEMA = "user_id string, item_id string, score double"
OUTPUT_COLUMNS = ["user_id", "item_id", "score", "rank", "model_name", "model_version", "generated_at"]


@dataclass(frozen=True)
class PredictOptions:
    """The batch prediction's parameters (command-line flags of the job)."""

    model_name: str = field(metadata={"help": "registered model name"})
    alias: str = field(default="champion", metadata={"help": "registry alias of the version to score with"})
    top_k: int = field(default=10, metadata={"help": "movies kept per user"})
    generated_at: str = field(default="", metadata={"help": "ISO timestamp stamped on the rows (default: now)"})


@lru_cache(maxsize=1)
def load_scoring_model(local_path: str):
    """The model at `local_path` as batch prediction scores with it (before its rating clip), cached per process:
    a Python worker loads it once however many partitions it scores."""
    import mlflow.tensorflow

    from lakeloop.fm_model import ranking_model

    return ranking_model(mlflow.tensorflow.load_model(local_path))


def score_batches(local_model_path: str, model_loads=None):
    """A `mapInArrow` function scoring candidate rows with the model at `local_model_path`, loaded once per
    Python worker; `model_loads` (an accumulator) counts the loads."""

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import numpy as np

        misses = load_scoring_model.cache_info().misses
        model = load_scoring_model(local_model_path)
        if model_loads is not None and load_scoring_model.cache_info().misses > misses:
            model_loads.add(1)
        for batch in batches:
            if batch.num_rows == 0:
                continue
            # one Arrow batch is one model call: `predict` would pay its per-call set-up for every batch
            predictions = model.predict_on_batch(model_inputs(batch))
            scores = np.asarray(predictions).reshape(-1).astype(np.float64)
            yield pa.RecordBatch.from_arrays([batch.column("user_id"), batch.column("item_id"), pa.array(scores)],
                                             names=["user_id", "item_id", "score"])

    return score


def candidate_inputs(spark: SparkSession, lake: Lake | Path, day: date, model_day: date) -> DataFrame:
    """Every user of the day's window × every catalog movie the user has not rated in it, with the model inputs
    (`user_id`, `item_id` and `FEATURE_COLUMNS`) of a model trained on `model_day`'s partition."""
    lake = as_lake(lake)

    def table(name: str) -> DataFrame:
        return read_table(spark, lake, FEATURES, day, name)

    rated = table(TRAIN).select("user_id", "item_id").union(table(EVAL).select("user_id", "item_id")).distinct()
    movies = read_catalog(spark, lake).select("item_id", "year", "genres")
    pairs = table(USER_HISTORY).select("user_id").crossJoin(movies).join(rated, ["user_id", "item_id"], "left_anti")
    return serving_inputs(spark, lake, day, pairs, model_day).select("user_id", "item_id", *FEATURE_COLUMNS)


def run(spark: SparkSession, lake: Lake | Path, day: date, options: PredictOptions) -> dict:
    """Score and write the day's top-k predictions; return the manifest."""
    import mlflow

    lake = as_lake(lake)
    version = aliased_version(options.model_name, options.alias)
    if version is None:
        log.warning("no %s version of %s: no predictions for %s", options.alias, options.model_name, day)
        return {"day": str(day), "model_name": options.model_name, "alias": options.alias, "skipped": True}
    model_day = version.day
    local_model = mlflow.artifacts.download_artifacts(f"models:/{options.model_name}/{version.version}")
    generated_at = datetime.fromisoformat(options.generated_at) if options.generated_at else datetime.now(UTC)

    candidates = candidate_inputs(spark, lake, day, model_day).repartition(spark.sparkContext.defaultParallelism)
    model_loads = spark.sparkContext.accumulator(0)
    scored = candidates.mapInArrow(score_batches(local_model, model_loads), SCORED_SCHEMA)
    by_score = Window.partitionBy("user_id").orderBy(F.col("score").desc(), F.col("item_id"))
    top = (scored.withColumn("rank", F.row_number().over(by_score)).filter(F.col("rank") <= options.top_k)
           .withColumn("model_name", F.lit(options.model_name))
           .withColumn("model_version", F.lit(version.version))
           .withColumn("generated_at", F.lit(generated_at).cast("timestamp"))
           .select(*OUTPUT_COLUMNS).orderBy("user_id", "rank")).cache()
    counts = top.agg(F.count(F.lit(1)).alias("rows"), F.countDistinct("user_id").alias("users")).first()
    manifest = {"day": str(day), "model_name": options.model_name, "alias": options.alias,
                "model_version": version.version, "model_day": str(model_day), "users": counts["users"],
                "rows": counts["rows"], "top_k": options.top_k, "generated_at": generated_at.isoformat(),
                "model_loads": model_loads.value, "task_slots": spark.sparkContext.defaultParallelism}
    write_predictions(lake, day, top.toArrow(), manifest)
    top.unpersist()
    log.info("predictions for %s: %s", day, manifest)
    return manifest


def write_predictions(lake: Lake, day: date, predictions: pa.Table, manifest: dict) -> str:
    """Commit the day's predictions (one Parquet file: they are k rows per user) to the lake, local or object
    store, through the driver; return the partition's URL."""
    import pyarrow.parquet as pq

    with lake.staged_partition(PREDICTIONS, day) as staged:
        pq.write_table(predictions, f"{staged.directory}/part-00000.parquet", filesystem=lake.filesystem)
        staged.manifest.update(manifest)
    return lake.uri(lake.partition(PREDICTIONS, day))


def main(argv: list[str] | None = None) -> None:
    """spark-submit entry point."""
    run_day_job(__doc__.splitlines()[0], "lakeloop-batch-predict", run, PredictOptions, argv)


if __name__ == "__main__":
    # Run through the importable module, so Python workers can unpickle the scoring function by reference.
    from jobs.batch_predict import main as batch_predict_main

    batch_predict_main()
