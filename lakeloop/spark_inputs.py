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
    DayFeatures,
)
from lakeloop.lake import Lake
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
    window, model = day_and_model_features(lake, day, model_day)
    with_history = (pairs.join(read_feature_table(spark, window, USER_HISTORY), "user_id", "left")
                    .join(F.broadcast(read_feature_table(spark, window, ITEM_HISTORY)), "item_id", "left"))
    return add_model_inputs(with_history, read_feature_table(spark, model, USER_VOCAB),
                            read_feature_table(spark, model, ITEM_VOCAB), model.spec.prior_mean)


def day_and_model_features(lake: Lake | Path, day: date, model_day: date | None) -> tuple[DayFeatures, DayFeatures]:
    """The features of the day (its window's history) and of the day the model was trained on (its vocabularies and
    prior; `model_day` None: the same day), each read once."""
    window = DayFeatures.of(lake, day)
    return window, window if model_day in (None, day) else DayFeatures.of(lake, model_day)


def serving_user_inputs(spark: SparkSession, lake: Lake | Path, day: date, model_day: date | None = None) -> DataFrame:
    """The user side of the model's inputs (`user_id`, `USER_TOWER_INPUTS`) for every user of the day's window, as
    `serving_inputs` builds it for a pair: history as of the end of the window, `model_day`'s vocabulary."""
    window, model = day_and_model_features(lake, day, model_day)
    users = read_feature_table(spark, window, USER_HISTORY)
    return (add_user_inputs(users, read_feature_table(spark, model, USER_VOCAB), model.spec.prior_mean)
            .select("user_id", *USER_TOWER_INPUTS))


def serving_item_inputs(spark: SparkSession, lake: Lake | Path, day: date, catalog: DataFrame,
                        model_day: date | None = None) -> DataFrame:
    """The item side of the model's inputs (`item_id`, `ITEM_TOWER_INPUTS`) for every movie of `catalog` (`item_id`,
    `year`, `genres`), as `serving_inputs` builds it for a pair: history as of the end of the day's window,
    `model_day`'s vocabulary."""
    window, model = day_and_model_features(lake, day, model_day)
    items = catalog.select("item_id", "year", "genres").join(
        F.broadcast(read_feature_table(spark, window, ITEM_HISTORY)), "item_id", "left")
    return (add_item_inputs(items, read_feature_table(spark, model, ITEM_VOCAB), model.spec.prior_mean)
            .select("item_id", *ITEM_TOWER_INPUTS))
