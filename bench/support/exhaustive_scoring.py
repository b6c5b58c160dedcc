"""The batch prediction job as it was before it ranked by towers (jobs/batch_predict.py at commit 6d39ed1), kept for
`bench.scoring`'s "today" column and its check: every user of the window × every catalog movie the user did not rate
(a cross join and an anti-join), every pair scored by the Keras model's ranking view in `mapInArrow`
(`predict_on_batch` per Arrow batch), the top k per user by a Window, written to a bench-only dataset of the lake.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from lakeloop.delta import replace_partition
from lakeloop.features import EVAL, FEATURE_COLUMNS, TRAIN, USER_HISTORY, DayFeatures, model_inputs
from lakeloop.lake import Lake, as_lake
from lakeloop.spark_inputs import serving_inputs
from lakeloop.spark_jobs import read_catalog, read_feature_table

if TYPE_CHECKING:
    from pathlib import Path

EXHAUSTIVE_PREDICTIONS = "bench/exhaustive-predictions"
SCORED_SCHEMA = "user_id string, item_id string, score double"
OUTPUT_COLUMNS = ["user_id", "item_id", "score", "rank", "model_name", "model_version", "generated_at"]


@lru_cache(maxsize=1)
def load_scoring_model(local_path: str) -> Any:
    """The model at `local_path` as the exhaustive job scores with it (before its rating clip), once per process."""
    import mlflow.tensorflow

    from lakeloop.fm_model import ranking_model

    return ranking_model(mlflow.tensorflow.load_model(local_path))


def score_batches(local_model_path: str) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """A `mapInArrow` function scoring candidate rows with the model at `local_model_path`, one
    `predict_on_batch` per Arrow batch."""

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        model = load_scoring_model(local_model_path)
        for batch in batches:
            if batch.num_rows == 0:
                continue
            scores = np.asarray(model.predict_on_batch(model_inputs(batch))).reshape(-1).astype(np.float64)
            yield pa.RecordBatch.from_arrays([batch.column("user_id"), batch.column("item_id"), pa.array(scores)],
                                             names=["user_id", "item_id", "score"])

    return score


def candidate_pairs(spark: SparkSession, lake: Lake | Path, day: date, model_day: date,
                    users: list[str] | None = None) -> DataFrame:
    """Every user of the day's window (or of `users` only) × every catalog movie the user has not rated in it, with
    the model inputs."""
    lake = as_lake(lake)
    features = DayFeatures.of(lake, day)

    def table(name: str) -> DataFrame:
        return read_feature_table(spark, features, name)

    rated = table(TRAIN).select("user_id", "item_id").union(table(EVAL).select("user_id", "item_id")).distinct()
    movies = read_catalog(spark, lake).select("item_id", "year", "genres")
    window = table(USER_HISTORY).select("user_id")
    if users is not None:
        window = window.filter(F.col("user_id").isin(users))
    pairs = window.crossJoin(movies).join(rated, ["user_id", "item_id"], "left_anti")
    return serving_inputs(spark, lake, day, pairs, model_day).select("user_id", "item_id", *FEATURE_COLUMNS)


def run_exhaustive(spark: SparkSession, lake: Lake | Path, day: date, model_name: str, alias: str, top_k: int,
                   generated_at: datetime, users: list[str] | None = None) -> pa.Table:
    """The exhaustive job as it ran: the registry's version behind `alias` downloaded, the day's top-k predictions
    (of `users` only, when given: a sample of a day too large to score pair by pair) scored pair by pair and
    committed to `EXHAUSTIVE_PREDICTIONS`; returned."""
    import mlflow

    from lakeloop.registry import aliased_version

    lake = as_lake(lake)
    version = aliased_version(model_name, alias)
    local_model = mlflow.artifacts.download_artifacts(f"models:/{model_name}/{version.version}")
    candidates = candidate_pairs(spark, lake, day, version.day, users)
    candidates = candidates.repartition(spark.sparkContext.defaultParallelism)
    scored = candidates.mapInArrow(score_batches(local_model), SCORED_SCHEMA)
    by_score = Window.partitionBy("user_id").orderBy(F.col("score").desc(), F.col("item_id"))
    top = (scored.withColumn("rank", F.row_number().over(by_score)).filter(F.col("rank") <= top_k)
           .withColumn("model_name", F.lit(model_name))
           .withColumn("model_version", F.lit(version.version))
           .withColumn("generated_at", F.lit(generated_at).cast("timestamp"))
           .select(*OUTPUT_COLUMNS).orderBy("user_id", "rank"))
    predictions = top.toArrow()
    replace_partition(lake, EXHAUSTIVE_PREDICTIONS, day, predictions, {"rows": predictions.num_rows})
    return predictions
