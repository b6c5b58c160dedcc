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
from lakeloop.features import (
    EVAL,
    FEATURE_COLUMNS,
    FEATURES,
    GENRES,
    HISTORY_COLUMNS,
    OOV_INDEX,
    TRAIN,
    USER_HISTORY,
    USER_VOCAB,
    feature_table_path,
    read_feature_manifest,
    read_feature_spec,
)
from lakeloop.ingest.schema import RATINGS_SCHEMA
from lakeloop.lake import Lake, partition_path
from lakeloop.movielens import MovieLens
from lakeloop.names import CURATED_RATINGS, RAW_RATINGS
from lakeloop.replay import build_events, write_catalog

DAY1, DAY2 = date(2026, 11, 19), date(2026, 11, 20)
ROWS = 5000
OPTIONS = features.FeatureOptions(window_days=2)


def table(lake, name: str) -> pa.Table:
    rows = pq.read_table(feature_table_path(lake, DAY2, name))
    return rows.sort_by(rows.schema.names[0])


def curated_rows(lake) -> pa.Table:
    return pa.concat_tables([pq.read_table(partition_path(lake, CURATED_RATINGS, day)) for day in (DAY1, DAY2)])


@pytest.fixture(scope="module")
def curated_lake(spark, movielens, tmp_path_factory):
    """Two days of curated ratings (the first 5,000 MovieLens ratings, replayed over DAY1..DAY2)."""
    lake = tmp_path_factory.mktemp("features-lake")
    write_catalog(movielens, lake)
    events = build_events(MovieLens(movielens.ratings.slice(0, ROWS), movielens.movies), 2, DAY2).cast(
        RATINGS_SCHEMA.output_schema)
    day_of = pc.cast(events["ts"], pa.date32())
    for day in (DAY1, DAY2):
        path = partition_path(lake, RAW_RATINGS, day)
        path.mkdir(parents=True)
        pq.write_table(events.filter(pc.equal(day_of, pa.scalar(day, pa.date32()))), path / "part-0.parquet")
        etl.run(spark, lake, day)
    return lake


@pytest.fixture(scope="module")
def built(spark, curated_lake):
    """The features of DAY2 over the two days, and the manifest."""
    return curated_lake, features.run(spark, curated_lake, DAY2, OPTIONS)


@pytest.fixture(scope="module")
def eval_changed(spark, built, tmp_path_factory):
    """The same lake, but every evaluation rating flipped and half the evaluation users replaced by new ones."""
    lake, manifest = built
    changed = tmp_path_factory.mktemp("changed") / "lake"
    shutil.copytree(lake, changed)
    cutoff = pd.Timestamp(manifest["eval_cutoff"])
    changed_lake = Lake.from_url(str(changed))
    for day in (DAY1, DAY2):
        rows = changed_lake.read_partition(CURATED_RATINGS, day)
        is_eval = pc.greater_equal(rows["ts"], pa.scalar(cutoff, rows["ts"].type))
        new_user = pc.and_(is_eval, pc.equal(pc.bit_wise_and(pc.cast(rows["item_id"], pa.int64()), 1), 1))
        rows = rows.set_column(rows.schema.get_field_index("rating"), "rating",
                               pc.if_else(is_eval, pc.subtract(6.0, rows["rating"]), rows["rating"]))
        rows = rows.set_column(rows.schema.get_field_index("user_id"), "user_id",
                               pc.if_else(new_user, pc.binary_join_element_wise("new", rows["user_id"], "-"),
                                          rows["user_id"]))
        with changed_lake.staged_partition(CURATED_RATINGS, day) as staged:
            pq.write_table(rows, f"{staged.directory}/part-0.parquet")
    return changed, features.run(spark, changed, DAY2, OPTIONS)


def test_the_window_is_split_by_time_into_model_inputs(built):
    lake, manifest = built
    train, evaluation = table(lake, TRAIN), table(lake, EVAL)
    assert manifest["rows_in"] == curated_rows(lake).num_rows == ROWS == train.num_rows + evaluation.num_rows
    assert 0.09 < manifest["eval_rows"] / ROWS < 0.11
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


def test_evaluation_rows_influence_nothing_that_is_fitted(built, eval_changed):
    (lake, manifest), (changed, changed_manifest) = built, eval_changed
    assert changed_manifest["eval_cutoff"] == manifest["eval_cutoff"]
    assert changed_manifest["spec"] == manifest["spec"]
    for name in (TRAIN, USER_VOCAB, "_vocab/items"):
        assert table(changed, name).equals(table(lake, name)), name
    before, after = table(lake, EVAL), table(changed, EVAL)
    assert pc.all(pc.equal(after["item_mean_rating"], before["item_mean_rating"])).as_py()
    kept_user = pc.invert(pc.starts_with(after["user_id"], "new-"))
    for column in ("user_mean_rating", "user_rating_count", "user_idx"):
        assert after.filter(kept_user)[column].equals(before.filter(kept_user)[column]), column


def test_unknown_ids_take_the_oov_index_and_the_prior(spark, eval_changed):
    lake, manifest = eval_changed
    spec = read_feature_spec(lake, DAY2)
    evaluation = table(lake, EVAL)
    new_users = evaluation.filter(pc.starts_with(evaluation["user_id"], "new-"))
    assert new_users.num_rows > 0 and manifest["eval_rows_unknown_user"] >= new_users.num_rows
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
    lake, manifest = built
    before = {name: table(lake, name) for name in (TRAIN, EVAL)}
    assert features.run(spark, lake, DAY2, OPTIONS) == manifest
    on_disk = read_feature_manifest(lake, DAY2)
    assert {key: value for key, value in on_disk.items() if key != "files"} == manifest

    for name, rows in before.items():
        assert table(lake, name).equals(rows), name


def test_on_a_lake_committed_by_manifest_the_jobs_read_only_committed_files(spark, built, tmp_path):
    """ETL and features on a local lake committed as on object stores: files of a killed attempt lying in the raw,
    curated and feature partitions are never read (by ETL, features, the trainer, batch prediction), and a rerun
    supersedes the previous attempt with the same rows."""
    from jobs.batch_predict import candidate_inputs
    from lakeloop.fm_trainer import FMTrainer
    from tfspark.driver.feed_plan import parquet_scan

    by_rename, manifest = built
    lake = Lake.from_url(str(tmp_path / "lake"), manifest_commits=True)
    shutil.copytree(by_rename / "reference", tmp_path / "lake" / "reference")
    for day in (DAY1, DAY2):
        with lake.staged_partition(RAW_RATINGS, day) as staged:
            shutil.copy(partition_path(by_rename, RAW_RATINGS, day) / "part-0.parquet", staged.directory)

    def kill_an_attempt(dataset: str, rows: pa.Table, column: str, table: str = "") -> None:
        """Leave a killed writer's files in the day's partition: its rows with `column` prefixed `ghost-`."""
        killed = Path(lake.partition(dataset, DAY2)) / "_attempt-killed" / table
        killed.mkdir(parents=True)
        ghosts = pc.binary_join_element_wise("ghost", rows[column], "-")
        pq.write_table(rows.set_column(rows.schema.get_field_index(column), column, ghosts), killed / "part-0.parquet")

    kill_an_attempt(RAW_RATINGS, lake.read_partition(RAW_RATINGS, DAY2), "event_id")
    etl.run(spark, lake, DAY2)  # its lookback rewrites DAY1 too, with DAY1's final rows
    assert lake.read_manifest(CURATED_RATINGS, DAY1)["files"][0]["name"].startswith("_attempt-")
    kill_an_attempt(CURATED_RATINGS, lake.read_partition(CURATED_RATINGS, DAY2), "user_id")
    assert features.run(spark, lake, DAY2, OPTIONS) == manifest

    users = table(by_rename, USER_HISTORY)
    kill_an_attempt(FEATURES, users, "user_id", USER_HISTORY)
    candidates = candidate_inputs(spark, lake, DAY2, DAY2).select("user_id").distinct().collect()
    assert sorted(row["user_id"] for row in candidates) == sorted(users["user_id"].to_pylist())
    train_files = lake.partition_files(FEATURES, DAY2, TRAIN)
    trainer_scan = parquet_scan(FMTrainer(lake=lake.url, day=str(DAY2)).pre_train(spark))
    assert sorted(urlsplit(uri).path for uri in trainer_scan.files) == sorted(train_files)

    assert features.run(spark, lake, DAY2, OPTIONS) == manifest
    assert lake.partition_files(FEATURES, DAY2, TRAIN) != train_files
    for name in (TRAIN, EVAL, USER_VOCAB):
        rows = lake.read_partition(FEATURES, DAY2, name)
        assert rows.sort_by(rows.schema.names[0]).equals(table(by_rename, name)), name
    names = sorted(path.name for path in Path(lake.partition(FEATURES, DAY2)).iterdir())
    assert len(names) == 2 and names[0].startswith("_attempt-") and names[1] == "_manifest.json"
