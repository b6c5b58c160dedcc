"""A tiny rating model on Spark's MovieLens sample, the trainer the tfspark tests run.

Rating ≈ user bias + item bias + a linear term over a fixed-length array feature, trained with `ctx.fit`.
Trainer args (strings) steer the test scenarios: `epochs`; `parquet` (read the ratings from this Parquet
directory, written by `write_ratings_parquet`, instead of parsing the text file: the direct Parquet path);
`uneven` (two very unequal partitions); `limit` (keep that many rows); `shutdown_marker` (a file
`shutdown` writes); `fail_in` (pre_train|train: raise there); and fault injection mid-training:
`fail_at_step`, `fail_rank`, `fail_mode` (exit: the Python worker dies; raise: an exception),
`fail_marker` (fail only while this file does not exist, creating it on the way down, so a retry succeeds).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyspark
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from tfspark import TFSparkTrainer, TrainContext

SPARK_HOME = Path(os.environ.get("SPARK_HOME") or Path(pyspark.__file__).parent)
RATINGS_FILE = SPARK_HOME / "data" / "mllib" / "als" / "sample_movielens_ratings.txt"


def write_ratings_parquet(directory: Path, first_file_rows: int = 1000, row_group_rows: int = 300) -> Path:
    """The sample ratings as two Parquet files in row groups, with the columns `pre_train` builds plus one more."""
    lines = RATINGS_FILE.read_text().splitlines()
    user, item, rating, timestamp = np.array([line.split("::") for line in lines], dtype=np.int64).T
    table = pa.table(
        {
            "user_id": user,
            "item_id": item,
            "rating": rating.astype(np.float64),
            "scaled_ids": pa.FixedSizeListArray.from_arrays(
                np.column_stack([user / 30, item / 100]).astype(np.float32).ravel(), 2
            ).cast(pa.list_(pa.float32())),
            "timestamp": timestamp,
        }
    )
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.slice(0, first_file_rows), directory / "part-0.parquet", row_group_size=row_group_rows)
    pq.write_table(table.slice(first_file_rows), directory / "part-1.parquet", row_group_size=row_group_rows)
    return directory


class TinyRatingsTrainer(TFSparkTrainer):
    """User/item biases plus a dense term, mean squared error, Adam."""

    batch_size = 64
    epochs = 4
    label_column = "rating"
    checkpoint_every = 10

    def __init__(self, **kwargs: str) -> None:
        super().__init__(**kwargs)
        self.epochs = int(self.args.get("epochs", self.epochs))
        self.num_users = 0
        self.num_items = 0
        self.shutdown_marker = self.args.get("shutdown_marker")

    def pre_train(self, spark: SparkSession) -> DataFrame:
        if self.args.get("fail_in") == "pre_train":
            raise RuntimeError("injected pre_train failure")
        if "parquet" in self.args:
            ratings = spark.read.parquet(self.args["parquet"]).select("user_id", "item_id", "rating", "scaled_ids")
        else:
            parts = F.split(F.col("value"), "::")
            ratings = spark.read.text(str(RATINGS_FILE)).select(
                parts[0].cast("long").alias("user_id"),
                parts[1].cast("long").alias("item_id"),
                parts[2].cast("double").alias("rating"),
            )
            ratings = ratings.withColumn(
                "scaled_ids",
                F.array((F.col("user_id") / 30).cast("float"), (F.col("item_id") / 100).cast("float")),
            )
        if "limit" in self.args:
            ratings = ratings.limit(int(self.args["limit"]))
        bounds = ratings.agg(F.max("user_id"), F.max("item_id")).first()
        self.num_users, self.num_items = int(bounds[0]) + 1, int(bounds[1]) + 1
        if self.args.get("uneven"):
            keyed = ratings.rdd.map(lambda row: (0 if row.user_id < 2 else 1, row))
            split = keyed.partitionBy(2, lambda key: key).values()
            return spark.createDataFrame(split, ratings.schema)
        return ratings

    def _maybe_fail(self, ctx: TrainContext, step: int, loss: float) -> None:
        if step != int(self.args["fail_at_step"]) or ctx.rank != int(self.args.get("fail_rank", "0")):
            return
        self.fail_once(f"step {step}")

    def fail_once(self, where: str) -> None:
        """Fail as `fail_mode` says unless `fail_marker` exists, creating it on the way down (a retry succeeds)."""
        marker = Path(self.args["fail_marker"])
        try:
            marker.touch(exist_ok=False)
        except FileExistsError:
            return
        if self.args.get("fail_mode", "exit") == "exit":
            os._exit(3)
        raise RuntimeError(f"injected failure at {where}")

    def build_model(self, keras: Any) -> Any:
        """The rating model, built with the `keras` module given (Keras 3, or tf-keras for `model.fit`)."""
        inputs = {
            "user_id": keras.Input((), dtype="int64", name="user_id"),
            "item_id": keras.Input((), dtype="int64", name="item_id"),
            "scaled_ids": keras.Input((2,), dtype="float32", name="scaled_ids"),
        }
        user_bias = keras.layers.Embedding(self.num_users, 1)(inputs["user_id"])
        item_bias = keras.layers.Embedding(self.num_items, 1)(inputs["item_id"])
        dense = keras.layers.Dense(1)(inputs["scaled_ids"])
        rating = keras.layers.Reshape(())(keras.layers.Add()([user_bias, item_bias, dense]))
        return keras.Model(inputs, rating)

    def train(self, dataset: Any, ctx: TrainContext) -> dict[str, Any]:
        import keras
        import tensorflow as tf

        if self.args.get("fail_in") == "train":
            raise RuntimeError("injected train failure")
        keras.utils.set_random_seed(7)
        with ctx.strategy.scope():
            model = self.build_model(keras)
            optimizer = keras.optimizers.Adam(0.05)
        on_step = None
        if "fail_at_step" in self.args:

            def on_step(step: int, loss: float) -> None:
                self._maybe_fail(ctx, step, loss)

        fitted = ctx.fit(model, optimizer, lambda y, p: tf.square(y - p), dataset, on_step_end=on_step)
        ctx.save_model(model)
        return {"num_users": self.num_users, "num_items": self.num_items, "final_loss": fitted["loss"]}

    def shutdown(self) -> None:
        if self.shutdown_marker:
            Path(self.shutdown_marker).write_text("shutdown called\n")
