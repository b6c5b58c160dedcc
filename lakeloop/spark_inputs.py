"""The model's inputs built in Spark: shared by the features job (training examples) and batch prediction
(candidate pairs), so both transform ids, catalog columns and history the same way."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from lakeloop.features import (
    GENRES,
    ITEM_HISTORY,
    ITEM_VOCAB,
    OOV_INDEX,
    USER_HISTORY,
    USER_VOCAB,
    YEAR_BUCKETS,
    read_feature_spec,
)
from lakeloop.lake import Lake, as_lake
from lakeloop.spark_jobs import read_feature_table
from lakeloop.towers import ITEM_TOWER_INPUTS, USER_TOWER_INPUTS


def year_index(column: str) -> Column:
    """Five-year buckets from 1920 (bucket 1) on; 0 for an unknown year."""
    bucket = F.least(F.greatest((F.col(column) - 1920) / 5, F.lit(0)), F.lit(YEAR_BUCKETS - 2)).cast("long") + 1
    return F.when(F.col(column).isNull(), F.lit(0)).otherwise(bucket)


def genre_multi_hot(column: str) -> Column:
    """A float array with 1.0 at each genre of the movie, in `GENRES` order."""
    return F.array(*[F.when(F.array_contains(F.col(column), name), F.lit(1.0)).otherwise(F.lit(0.0))
                     for name in GENRES]).cast("array<float>")


def add_model_inputs(frame: DataFrame, user_vocab: DataFrame, item_vocab: DataFrame, prior_mean: float) -> DataFrame:
    """Add the model's inputs to rows holding ids, catalog `year`/`genres` and (possibly null) history."""
    return add_item_inputs(add_user_inputs(frame, user_vocab, prior_mean), item_vocab, prior_mean)


def add_user_inputs(frame: DataFrame, user_vocab: DataFrame, prior_mean: float) -> DataFrame:
    """Add the user side of the model's inputs to rows holding `user_id` and (possibly null) user history."""
    return (frame.join(F.broadcast(user_vocab.select("user_id", "user_idx")), "user_id", "left")
            .fillna({"user_idx": OOV_INDEX})
            .fillna({"user_mean_rating": prior_mean, "user_rating_count": 0.0}))


def add_item_inputs(frame: DataFrame, item_vocab: DataFrame, prior_mean: float) -> DataFrame:
    """Add the item side of the model's inputs to rows holding `item_id`, catalog `year`/`genres` and (possibly
    null) item history."""
    return (frame.join(F.broadcast(item_vocab.select("item_id", "item_idx")), "item_id", "left")
            .fillna({"item_idx": OOV_INDEX})
            .withColumn("year_idx", year_index("year"))
            .withColumn("genres", genre_multi_hot("genres"))
            .fillna({"item_mean_rating": prior_mean, "item_rating_count": 0.0}))


def serving_inputs(spark: SparkSession, lake: Lake | Path, day: date, pairs: DataFrame,
                   model_day: date | None = None) -> DataFrame:
    """Model inputs for (user, item) pairs with catalog `year`/`genres`: history statistics as of the end of
    the day's window, and the vocabularies and prior of the partition the model was trained on (`model_day`,
    by default the same day: a champion kept from an earlier day still needs its own indices)."""
    lake = as_lake(lake)

    def table(table_day: date, name: str) -> DataFrame:
        return read_feature_table(spark, lake, table_day, name)

    model_day = model_day or day
    with_history = (pairs.join(table(day, USER_HISTORY), "user_id", "left")
                    .join(F.broadcast(table(day, ITEM_HISTORY)), "item_id", "left"))
    return add_model_inputs(with_history, table(model_day, USER_VOCAB), table(model_day, ITEM_VOCAB),
                            read_feature_spec(lake, model_day).prior_mean)


def serving_user_inputs(spark: SparkSession, lake: Lake | Path, day: date, model_day: date | None = None) -> DataFrame:
    """The user side of the model's inputs (`user_id`, `USER_TOWER_INPUTS`) for every user of the day's window, as
    `serving_inputs` builds it for a pair: history as of the end of the window, `model_day`'s vocabulary."""
    lake = as_lake(lake)
    model_day = model_day or day
    users = read_feature_table(spark, lake, day, USER_HISTORY)
    return (add_user_inputs(users, read_feature_table(spark, lake, model_day, USER_VOCAB),
                            read_feature_spec(lake, model_day).prior_mean)
            .select("user_id", *USER_TOWER_INPUTS))


def serving_item_inputs(spark: SparkSession, lake: Lake | Path, day: date, catalog: DataFrame,
                        model_day: date | None = None) -> DataFrame:
    """The item side of the model's inputs (`item_id`, `ITEM_TOWER_INPUTS`) for every movie of `catalog` (`item_id`,
    `year`, `genres`), as `serving_inputs` builds it for a pair: history as of the end of the day's window,
    `model_day`'s vocabulary."""
    lake = as_lake(lake)
    model_day = model_day or day
    items = catalog.select("item_id", "year", "genres").join(
        F.broadcast(read_feature_table(spark, lake, day, ITEM_HISTORY)), "item_id", "left")
    return (add_item_inputs(items, read_feature_table(spark, lake, model_day, ITEM_VOCAB),
                            read_feature_spec(lake, model_day).prior_mean)
            .select("item_id", *ITEM_TOWER_INPUTS))
