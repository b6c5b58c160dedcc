"""Spark batch prediction: the top-k unseen movies per user, ranked by the registry's `champion` as a user tower
and an item tower (`lakeloop.towers`), written to `<lake>/predictions/dt=D/`; the towers go to `<lake>/embeddings/`.

See docs/evaluation-and-registry.md (batch predictions).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakeloop.delta import PartitionCommit, replace_partition
from lakeloop.embeddings import build_day_towers, log_embeddings, tower_from_table, write_embeddings
from lakeloop.features import RATED_COLUMN, USER_RATED, DayFeatures
from lakeloop.lake import Lake, as_lake
from lakeloop.names import PREDICTIONS, USER_EMBEDDINGS
from lakeloop.registry import aliased_version, registered_towers
from lakeloop.spark_jobs import read_feature_table, read_table, run_day_job
from lakeloop.towers import EXCLUDED_SCORE, FMTowers, Tower, pair_scores, top_k

if TYPE_CHECKING:
    import keras
    from pyspark import Accumulator, Broadcast

log = logging.getLogger(__name__)
PREDICTIONS_VERSION_TAG = "lakeloop.predictions_version"  # the predictions table's version the model last committed
SCORED_SCHEMA = "user_id string, item_id string, score double, rank int"
OUTPUT_COLUMNS = ["user_id", "item_id", "score", "rank", "model_name", "model_version", "generated_at"]
USER_BLOCK = 1024  # users scored at a time in a worker: a (1,024 × catalog) float64 score matrix, 14 MB at 1,682


@dataclass(frozen=True)
class PredictOptions:
    """The batch prediction's parameters (command-line flags of the job)."""

    model_name: str = field(metadata={"help": "registered model name"})
    alias: str = field(default="champion", metadata={"help": "registry alias of the version to score with"})
    top_k: int = field(default=10, metadata={"help": "movies kept per user"})
    generated_at: str = field(default="", metadata={"help": "ISO timestamp stamped on the rows (default: now)"})


@dataclass(frozen=True)
class ItemRanking:
    """What a worker needs to rank the catalog for users (broadcast once): the constant of every score and the
    catalog's item tower with its ids (sorted: a smaller position is a smaller id)."""

    constant: float
    item_ids: pa.Array
    items: Tower


def top_items(ranking: Broadcast[ItemRanking] | ItemRanking, k: int, block: int = USER_BLOCK,
              compute_seconds: Accumulator[float] | None = None,
              ) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """A `mapInArrow` function from batches of `candidate_inputs` rows (a user's tower and rated movies) to each
    user's k best catalog movies by the towers' score (`SCORED_SCHEMA`), the movies the user rated left out, ties to
    the smaller item id: a block of users × the catalog is scored by one matrix product and cut by a partial sort, so
    k rows per user leave the worker. `ranking` is the broadcast `ItemRanking` (or one, in a test);
    `compute_seconds` (an accumulator) adds up the seconds the workers spend ranking, Spark's plumbing left out."""

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        side = ranking if isinstance(ranking, ItemRanking) else ranking.value
        ranks = np.arange(1, k + 1, dtype=np.int32)
        for batch in batches:
            for start in range(0, batch.num_rows, block):
                started = time.monotonic()
                rows = batch.slice(start, block)
                scores = pair_scores(side.constant, tower_from_table(rows), side.items)
                rated = rows.column(RATED_COLUMN)
                rated_ids = rated.flatten()
                positions = pc.index_in(rated_ids, value_set=side.item_ids.cast(rated_ids.type))
                in_catalog = positions.is_valid().to_numpy(zero_copy_only=False)
                owners = np.repeat(np.arange(rows.num_rows), rated.value_lengths().fill_null(0).to_numpy())
                scores[owners[in_catalog], pc.drop_null(positions).to_numpy()] = EXCLUDED_SCORE
                columns, kept = top_k(scores, k)
                user_rows = np.repeat(np.arange(rows.num_rows), kept.sum(axis=1))
                picked = columns[kept]
                top = pa.RecordBatch.from_arrays(
                    [rows.column("user_id").take(user_rows), side.item_ids.take(picked),
                     pa.array(scores[user_rows, picked], pa.float64()),
                     pa.array(np.broadcast_to(ranks[:columns.shape[1]], columns.shape)[kept], pa.int32())],
                    names=["user_id", "item_id", "score", "rank"])
                if compute_seconds is not None:
                    compute_seconds.add(time.monotonic() - started)
                yield top

    return score


def candidate_inputs(spark: SparkSession, lake: Lake | Path, day: date, users_version: int) -> DataFrame:
    """One row per user of the day's window: `user_id`, `rated`, the ids of the movies the user rated in the window
    (train and eval; the features job's `history/rated`), which are not candidates — the candidates are every other
    catalog movie — and the user's tower as the driver committed it (`embeddings/users` as of `users_version`:
    `bias`, `factors`). No (user, movie) pair is formed, and nothing is shuffled: the tower (63 MB at 123K users) is
    broadcast into the scan of `history/rated`, whose partitions are the users' blocks."""
    lake = as_lake(lake)
    rated = read_feature_table(spark, DayFeatures.of(lake, day), USER_RATED)
    return rated.join(F.broadcast(read_table(spark, lake, USER_EMBEDDINGS, day, users_version)), "user_id")


def run(spark: SparkSession, lake: Lake | Path, day: date, options: PredictOptions) -> dict:
    """Rank and write the day's top-k predictions and the champion's towers of the day; return the manifest."""
    import mlflow

    lake = as_lake(lake)
    version = aliased_version(options.model_name, options.alias)
    if version is None:
        log.warning("no %s version of %s: no predictions for %s", options.alias, options.model_name, day)
        return {"day": str(day), "model_name": options.model_name, "alias": options.alias, "skipped": True}
    model_day = version.day
    generated_at = datetime.fromisoformat(options.generated_at) if options.generated_at else datetime.now(UTC)
    lineage = {"model_name": options.model_name, "model_version": version.version, "model_day": str(model_day)}

    started = time.monotonic()
    log.info("scoring %s with %s version %s (trained on %s): loading its towers and building the day's", day,
             options.model_name, version.version, model_day)
    towers = build_day_towers(spark, lake, day, model_day, *model_towers(options.model_name, version.version))
    towers_built = time.monotonic()
    log.info("towers of %d users and %d items built (%.1f s); writing them to the lake", len(towers.user_ids),
             len(towers.item_ids), towers_built - started)
    embeddings = write_embeddings(lake, day, towers, lineage)
    log_embeddings(options.model_name, version.version, day, embeddings)
    embeddings_written = time.monotonic()

    parallelism = spark.sparkContext.defaultParallelism
    log.info("ranking the top %d of every user in %d task slots", options.top_k, parallelism)
    ranking = spark.sparkContext.broadcast(ItemRanking(towers.constant, towers.item_ids, towers.items))
    compute_seconds = spark.sparkContext.accumulator(0.0)
    candidates = candidate_inputs(spark, lake, day, int(embeddings["users_version"]))
    top = (candidates.mapInArrow(top_items(ranking, options.top_k, compute_seconds=compute_seconds), SCORED_SCHEMA)
           .withColumn("model_name", F.lit(options.model_name))
           .withColumn("model_version", F.lit(version.version))
           .withColumn("generated_at", F.lit(generated_at).cast("timestamp"))
           .select(*OUTPUT_COLUMNS))
    predictions = top.toArrow().sort_by([("user_id", "ascending"), ("rank", "ascending")])
    ranking.destroy()
    ranked = time.monotonic()
    manifest = {"day": str(day), "model_name": options.model_name, "alias": options.alias,
                "model_version": version.version, "model_day": str(model_day),
                "users": pc.count_distinct(predictions["user_id"]).as_py(), "rows": predictions.num_rows,
                "top_k": options.top_k, "generated_at": generated_at.isoformat(), "catalog": len(towers.item_ids),
                "window_users": len(towers.user_ids), "embeddings": embeddings, "task_slots": parallelism,
                "seconds": {"model_and_towers": round(towers_built - started, 3),
                            "embeddings": round(embeddings_written - towers_built, 3),
                            "ranking": round(ranked - embeddings_written, 3),
                            "in_workers": round(compute_seconds.value, 3)}}
    manifest["table_version"] = write_predictions(lake, day, predictions, manifest).version
    mlflow.MlflowClient().set_model_version_tag(options.model_name, version.version, PREDICTIONS_VERSION_TAG,
                                                str(manifest["table_version"]))
    log.info("predictions for %s: %s", day, manifest)
    return manifest


def model_towers(model_name: str, version: str) -> tuple[FMTowers, keras.Model | None]:
    """The registered version's towers as registration logged them (no TensorFlow), or, for a version registered
    without them, built from the Keras model (returned too, to check the towers against it)."""
    import mlflow

    towers = registered_towers(model_name, version)
    if towers is not None:
        return towers, None
    log.info("%s version %s has no logged towers (registered before lakeloop logged them): loading the Keras model",
             model_name, version)
    model = mlflow.tensorflow.load_model(mlflow.artifacts.download_artifacts(f"models:/{model_name}/{version}"))
    return FMTowers.of(model), model


def write_predictions(lake: Lake, day: date, predictions: pa.Table, manifest: dict) -> PartitionCommit:
    """Make the day's predictions (k rows per user, collected on the driver) the day's partition of the Delta table
    `predictions`, in one commit that carries the manifest; return the table's URL and the version committed."""
    return replace_partition(lake, PREDICTIONS, day, predictions, manifest)


def main(argv: list[str] | None = None) -> None:
    """spark-submit entry point."""
    run_day_job(__doc__.splitlines()[0], "lakeloop-batch-predict", run, PredictOptions, argv)


if __name__ == "__main__":
    # Run through the importable module, so Python workers can unpickle the scoring function by reference.
    from jobs.batch_predict import main as batch_predict_main

    batch_predict_main()
