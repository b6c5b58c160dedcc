"""The features job on a real MovieLens slice: layout and time split, history statistics strictly from earlier
training ratings, no leakage from the evaluation set, out-of-vocabulary ids, stable reruns."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from jobs import etl, features
from lakeloop import spark_inputs
from lakeloop.delta import read_partition, replace_partition
from lakeloop.features import (
    EVAL,
    FEATURE_COLUMNS,
    GENRES,
    HISTORY_COLUMNS,
    ITEM_VOCAB,
    OOV_INDEX,
    RATED_COLUMN,
    TRAIN,
    USER_HISTORY,
    USER_RATED,
    USER_VOCAB,
    DayFeatures,
    feature_dataset,
    read_feature_spec,
    read_feature_summary,
)
from lakeloop.ingest.schema import RATINGS_SCHEMA
from lakeloop.lake import Lake, as_lake
from lakeloop.movielens import MovieLens
from lakeloop.names import CURATED_RATINGS, RAW_RATINGS
from lakeloop.replay import build_events, write_catalog

DAY1, DAY2 = date(2026, 11, 19), date(2026, 11, 20)
ROWS = 5000
OPTIONS = features.FeatureOptions(window_days=2)


def table(lake, name: str) -> pa.Table:
    """The day's feature table `name`, all its columns, as the day's features run committed it."""
    rows = pq.ParquetDataset(DayFeatures.of(lake, DAY2).files(name), partitioning=None).read()
    return rows.sort_by(rows.schema.names[0])


def curated_rows(lake) -> pa.Table:
    return pa.concat_tables([read_partition(as_lake(lake), CURATED_RATINGS, day) for day in (DAY1, DAY2)])


def what_was_built(summary: dict) -> dict:
    """A features summary without what differs between two runs building the same features: the run's id and the
    table versions its commits made."""
    return {key: value for key, value in summary.items()
            if key not in ("features_run", "table_version", "table_versions")}


@pytest.fixture(scope="module")
def curated_lake(spark, movielens, tmp_path_factory):
    """Two days of curated ratings (the first 5,000 MovieLens ratings, replayed over DAY1..DAY2)."""
    lake = tmp_path_factory.mktemp("features-lake")
    write_catalog(movielens, lake)
    events = build_events(MovieLens(movielens.ratings.slice(0, ROWS), movielens.movies), 2, DAY2).cast(
        RATINGS_SCHEMA.output_schema)
    day_of = pc.cast(events["ts"], pa.date32())
    for day in (DAY1, DAY2):
        replace_partition(Lake.from_url(str(lake)), RAW_RATINGS, day,
                          events.filter(pc.equal(day_of, pa.scalar(day, pa.date32()))), {"day": str(day)})
        etl.run(spark, lake, day)
    return lake


@pytest.fixture(scope="module")
def built(spark, curated_lake):
    """The features of DAY2 over the two days, and the summary of their commit."""
    return curated_lake, features.run(spark, curated_lake, DAY2, OPTIONS)


@pytest.fixture(scope="module")
def eval_changed(spark, built, tmp_path_factory):
    """The same lake, but every evaluation rating flipped and half the evaluation users replaced by new ones."""
    lake, summary = built
    changed = tmp_path_factory.mktemp("changed") / "lake"
    shutil.copytree(lake, changed)
    cutoff = pd.Timestamp(summary["eval_cutoff"])
    changed_lake = Lake.from_url(str(changed))
    for day in (DAY1, DAY2):
        rows = read_partition(changed_lake, CURATED_RATINGS, day)
        is_eval = pc.greater_equal(rows["ts"], pa.scalar(cutoff, rows["ts"].type))
        new_user = pc.and_(is_eval, pc.equal(pc.bit_wise_and(pc.cast(rows["item_id"], pa.int64()), 1), 1))
        rows = rows.set_column(rows.schema.get_field_index("rating"), "rating",
                               pc.if_else(is_eval, pc.subtract(6.0, rows["rating"]), rows["rating"]))
        rows = rows.set_column(rows.schema.get_field_index("user_id"), "user_id",
                               pc.if_else(new_user, pc.binary_join_element_wise("new", rows["user_id"], "-"),
                                          rows["user_id"]))
        replace_partition(changed_lake, CURATED_RATINGS, day, rows, {"day": str(day), "changed_by": "eval_changed"})
    return changed, features.run(spark, changed, DAY2, OPTIONS)


def test_the_window_is_split_by_time_into_model_inputs(built):
    lake, summary = built
    train, evaluation = table(lake, TRAIN), table(lake, EVAL)
    assert summary["rows_in"] == curated_rows(lake).num_rows == ROWS == train.num_rows + evaluation.num_rows
    assert 0.09 < summary["eval_rows"] / ROWS < 0.11
    assert pc.max(train["ts"]).as_py() < pc.min(evaluation["ts"]).as_py()
    assert train.schema.field("genres").type == pa.list_(pa.float32())
    assert set(pc.list_value_length(train["genres"]).unique().to_pylist()) == {len(GENRES)}
    assert {train.schema.field(name).type for name in HISTORY_COLUMNS} == {pa.float32()}
    assert {train.schema.field(name).type for name in FEATURE_COLUMNS[:3]} == {pa.int64()}

    spec = read_feature_spec(lake, DAY2)
    users = table(lake, USER_VOCAB)
    assert spec.user_vocab_size == users.num_rows + 1 == pc.count_distinct(train["user_id"]).as_py() + 1
    assert sorted(users["user_idx"].to_pylist()) == list(range(1, spec.user_vocab_size))
    assert pc.min(train["user_idx"]).as_py() >= 1 and pc.min(train["item_idx"]).as_py() >= 1
    assert spec.prior_mean == pytest.approx(pc.mean(train["label"]).as_py(), rel=1e-6)
    assert (spec.rating_min, spec.rating_max) == (1.0, 5.0)


def test_history_statistics_come_from_earlier_training_ratings_only(built):
    lake, _ = built
    train, evaluation = table(lake, TRAIN), table(lake, EVAL)
    spec = read_feature_spec(lake, DAY2)
    examples = pa.concat_tables([train, evaluation]).to_pandas()
    history = train.select(["user_id", "item_id", "ts", "label"]).to_pandas()
    for entity in ("user", "item"):
        pairs = examples[["event_id", f"{entity}_id", "ts"]].merge(history, on=f"{entity}_id", suffixes=("", "_past"))
        earlier = pairs[pairs["ts_past"] < pairs["ts"]].groupby("event_id")["label"].agg(["mean", "count"])
        expected = examples[["event_id"]].join(earlier, on="event_id")
        expected_mean = expected["mean"].fillna(spec.prior_mean).to_numpy()
        np.testing.assert_allclose(examples[f"{entity}_mean_rating"], expected_mean, rtol=1e-5)
        np.testing.assert_array_equal(examples[f"{entity}_rating_count"], expected["count"].fillna(0).to_numpy())


def test_each_user_of_the_window_has_the_sorted_ids_of_every_movie_they_rated(built):
    lake, _ = built
    examples = pa.concat_tables([table(lake, TRAIN), table(lake, EVAL)]).to_pandas()
    expected = examples.groupby("user_id")["item_id"].agg(lambda ids: sorted(set(ids)))
    rated = table(lake, USER_RATED).to_pandas().set_index("user_id")[RATED_COLUMN].map(list)
    assert len(rated) == examples["user_id"].nunique() == table(lake, USER_HISTORY).num_rows
    assert rated.sort_index().to_dict() == expected.sort_index().to_dict()
    assert (examples.groupby("user_id")["item_id"].nunique() > 1).any()  # lists, not single ids


def test_evaluation_rows_influence_nothing_that_is_fitted(built, eval_changed):
    (lake, summary), (changed, changed_summary) = built, eval_changed
    assert changed_summary["eval_cutoff"] == summary["eval_cutoff"]
    assert changed_summary["spec"] == summary["spec"]
    for name in (TRAIN, USER_VOCAB, ITEM_VOCAB):
        assert table(changed, name).equals(table(lake, name)), name
    before, after = table(lake, EVAL), table(changed, EVAL)
    assert pc.all(pc.equal(after["item_mean_rating"], before["item_mean_rating"])).as_py()
    kept_user = pc.invert(pc.starts_with(after["user_id"], "new-"))
    for column in ("user_mean_rating", "user_rating_count", "user_idx"):
        assert after.filter(kept_user)[column].equals(before.filter(kept_user)[column]), column


def test_unknown_ids_take_the_oov_index_and_the_prior(spark, eval_changed):
    lake, summary = eval_changed
    spec = read_feature_spec(lake, DAY2)
    evaluation = table(lake, EVAL)
    new_users = evaluation.filter(pc.starts_with(evaluation["user_id"], "new-"))
    assert new_users.num_rows > 0 and summary["eval_rows_unknown_user"] >= new_users.num_rows
    assert set(new_users["user_idx"].to_pylist()) == {OOV_INDEX}
    assert set(new_users["user_rating_count"].to_pylist()) == {0.0}
    np.testing.assert_allclose(new_users["user_mean_rating"].to_numpy(), spec.prior_mean, rtol=1e-6)

    user, item = table(lake, TRAIN)["user_id"][0].as_py(), table(lake, TRAIN)["item_id"][0].as_py()
    pairs = spark.createDataFrame([("new-1", "999999", None, []), (user, item, 1995, ["Comedy"])],
                                  "user_id string, item_id string, year int, genres array<string>")
    rows = {row["user_id"]: row for row in spark_inputs.serving_inputs(spark, lake, DAY2, pairs).collect()}
    unknown, known = rows["new-1"], rows[user]
    assert (unknown["user_idx"], unknown["item_idx"], unknown["year_idx"]) == (OOV_INDEX, OOV_INDEX, 0)
    assert unknown["user_mean_rating"] == pytest.approx(spec.prior_mean) and unknown["item_rating_count"] == 0
    assert known["user_idx"] != OOV_INDEX and known["item_idx"] != OOV_INDEX and known["user_rating_count"] > 0
    assert known["genres"] == [1.0 if genre == "Comedy" else 0.0 for genre in GENRES]


def test_a_rerun_gives_the_same_partition(spark, built):
    lake, summary = built
    before = {name: table(lake, name) for name in (TRAIN, EVAL)}
    rerun = features.run(spark, lake, DAY2, OPTIONS)
    assert what_was_built(rerun) == what_was_built(summary)
    assert read_feature_summary(lake, DAY2) == rerun
    assert rerun["table_version"] > summary["table_version"]

    for name, rows in before.items():
        assert table(lake, name).equals(rows), name


def test_the_jobs_read_only_committed_files(spark, built, tmp_path):
    """ETL, features, the trainer and batch prediction read the files the Delta log names: a killed writer's files
    lying in the raw, curated and feature tables' day folders are never read, and a rerun replaces the day with the
    same rows."""
    from lakeloop.fm_trainer import FMTrainer
    from tfspark.driver.feed_plan import parquet_scan

    source, summary = built
    shutil.copytree(source, tmp_path / "lake")
    lake = Lake.from_url(str(tmp_path / "lake"))

    def kill_an_attempt(dataset: str, rows: pa.Table, column: str) -> None:
        """Leave a killed writer's files in the day's folder of the table: its rows with `column` prefixed `ghost-`."""
        killed = Path(lake.partition(dataset, DAY2)) / "spark-killed"
        killed.mkdir(parents=True)
        ghosts = pc.binary_join_element_wise("ghost", rows[column], "-")
        pq.write_table(rows.set_column(rows.schema.get_field_index(column), column, ghosts), killed / "part-0.parquet")

    kill_an_attempt(RAW_RATINGS, read_partition(lake, RAW_RATINGS, DAY2), "event_id")
    etl.run(spark, lake, DAY2)  # its lookback rewrites DAY1 too, with DAY1's final rows
    kill_an_attempt(CURATED_RATINGS, read_partition(lake, CURATED_RATINGS, DAY2), "user_id")
    assert what_was_built(features.run(spark, lake, DAY2, OPTIONS)) == what_was_built(summary)

    users = table(source, USER_HISTORY)
    kill_an_attempt(feature_dataset(USER_HISTORY), users, "user_id")
    window_users = spark_inputs.serving_user_inputs(spark, lake, DAY2).select("user_id").collect()
    assert sorted(row["user_id"] for row in window_users) == sorted(users["user_id"].to_pylist())
    train_files = DayFeatures.of(lake, DAY2).files(TRAIN)
    trainer_scan = parquet_scan(FMTrainer(lake=lake.url, day=str(DAY2)).pre_train(spark))
    assert sorted(urlsplit(uri).path for uri in trainer_scan.files) == sorted(train_files)

    assert what_was_built(features.run(spark, lake, DAY2, OPTIONS)) == what_was_built(summary)
    assert DayFeatures.of(lake, DAY2).files(TRAIN) != train_files
    for name in (TRAIN, EVAL, USER_VOCAB):
        assert table(lake, name).equals(table(source, name)), name


def test_a_features_run_killed_between_its_commits_leaves_the_previous_set(spark, built, tmp_path):
    """The day's tables are read as the version the train table's commit names: a later run that committed a
    vocabulary and died before committing train changes nothing readers see."""
    from lakeloop.spark_jobs import write_partition

    source, summary = built
    shutil.copytree(source, tmp_path / "lake")
    lake = Lake.from_url(str(tmp_path / "lake"))
    vocabulary = table(lake, USER_VOCAB)
    reversed_indices = pc.subtract(vocabulary.num_rows + 1, vocabulary["user_idx"])
    reindexed = vocabulary.set_column(vocabulary.schema.get_field_index("user_idx"), "user_idx", reversed_indices)
    commit = write_partition(spark.createDataFrame(reindexed.to_pandas()), lake, feature_dataset(USER_VOCAB), DAY2,
                             {"day": str(DAY2)})

    assert commit.version > DayFeatures.of(lake, DAY2).versions[USER_VOCAB]
    newest = read_partition(lake, feature_dataset(USER_VOCAB), DAY2)
    assert newest.sort_by("user_id").to_pylist() == reindexed.sort_by("user_id").to_pylist()
    assert table(lake, USER_VOCAB).equals(vocabulary)
