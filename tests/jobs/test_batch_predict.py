"""Batch prediction with the registry's champion, in-process Spark, against a real MLflow store."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from jobs import batch_predict
from lakeloop.evaluation import evaluate_model
from lakeloop.features import EVAL, TRAIN, USER_HISTORY, feature_table_path
from lakeloop.lake import partition_path
from lakeloop.models import MODEL_FILE, TRAIN_SUMMARY, model_dir, write_json
from lakeloop.names import MOVIES
from lakeloop.registry import RunLineage, register_model
from lakeloop.replay import write_catalog
from tests.catalogs import with_integer_item_ids

DAY = date(2026, 11, 20)
MODEL = "predict-test-fm"
GENERATED_AT = "2026-11-21T00:00:00+00:00"


@pytest.fixture
def champion(feature_lake, fitted_model, tmp_path, monkeypatch) -> dict:
    """A model of the day evaluated, promoted and registered as `champion` in a fresh MLflow store."""
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    directory = model_dir(feature_lake, MODEL, DAY)
    directory.mkdir(parents=True, exist_ok=True)
    fitted_model(feature_lake, epochs=8).save(directory / MODEL_FILE)
    write_json(directory / TRAIN_SUMMARY, {"global_step": 10})
    assert evaluate_model(feature_lake, MODEL, DAY)["gate"]["promote"]
    lineage = RunLineage("daily_retrain", "run-1", "2026-11-20T00:00:00+00:00", "2026-11-21T00:00:00+00:00",
                         "features", "predictions", "unknown")
    return register_model(feature_lake, MODEL, DAY, tracking, lineage)


def predict(spark, lake) -> tuple[dict, object]:
    options = batch_predict.PredictOptions(model_name=MODEL, generated_at=GENERATED_AT)
    manifest = batch_predict.run(spark, lake, DAY, options)
    return manifest, pq.read_table(partition_path(lake, batch_predict.PREDICTIONS, DAY))


@pytest.mark.slow
def test_the_top_ten_unseen_movies_per_user_reproducibly(spark, feature_lake, champion, movielens):
    manifest, predictions = predict(spark, feature_lake)

    assert predictions.column_names == batch_predict.OUTPUT_COLUMNS
    rated = pq.read_table(feature_table_path(feature_lake, DAY, TRAIN), columns=["user_id", "item_id"]).to_pylist()
    rated += pq.read_table(feature_table_path(feature_lake, DAY, EVAL), columns=["user_id", "item_id"]).to_pylist()
    seen = {(row["user_id"], row["item_id"]) for row in rated}
    catalog = pq.read_table(feature_lake / MOVIES, columns=["item_id"]).num_rows
    users = pq.read_table(feature_table_path(feature_lake, DAY, USER_HISTORY), columns=["user_id"])
    rows = predictions.to_pylist()
    assert not seen.intersection((row["user_id"], row["item_id"]) for row in rows)
    by_user: dict[str, list[dict]] = {}
    for row in rows:
        by_user.setdefault(row["user_id"], []).append(row)
    assert set(by_user) == set(users["user_id"].to_pylist())
    for user, ranked in by_user.items():
        candidates = catalog - sum(1 for pair in seen if pair[0] == user)
        assert len(ranked) == min(10, candidates), user
        assert [row["rank"] for row in ranked] == list(range(1, len(ranked) + 1))
        assert all(a["score"] >= b["score"] for a, b in zip(ranked, ranked[1:], strict=False))
    assert set(predictions["model_name"].to_pylist()) == {MODEL}
    assert set(predictions["model_version"].to_pylist()) == {champion["version"]}
    assert set(predictions["generated_at"].to_pylist()) == {datetime(2026, 11, 21, tzinfo=UTC)}
    assert manifest["rows"] == predictions.num_rows and manifest["users"] == len(by_user)
    assert 1 <= manifest["model_loads"] <= manifest["task_slots"]
    on_disk = json.loads((partition_path(feature_lake, batch_predict.PREDICTIONS, DAY) / "_manifest.json").read_text())
    assert on_disk["model_version"] == champion["version"]

    write_catalog(with_integer_item_ids(movielens), feature_lake)
    try:
        _, again = predict(spark, feature_lake)
    finally:
        write_catalog(movielens, feature_lake)
    assert again.equals(predictions), "a catalog whose item_id is an integer changed the lists"
    assert pc.count_distinct(predictions["score"]).as_py() > predictions.num_rows * 0.9, "scores tie"


def test_predictions_are_committed_to_an_s3_lake(s3_lake):
    predictions = pa.table({"user_id": ["1", "1", "2"], "item_id": ["50", "7", "50"], "score": [4.5, 4.1, 3.9],
                            "rank": [1, 2, 1], "model_name": [MODEL] * 3, "model_version": ["3"] * 3,
                            "generated_at": pa.array([datetime(2026, 11, 21, tzinfo=UTC)] * 3,
                                                     pa.timestamp("us", tz="UTC"))})
    url = batch_predict.write_predictions(s3_lake, DAY, predictions, {"rows": 3, "model_version": "3"})

    assert url == f"{s3_lake.url}/predictions/dt={DAY}"
    assert s3_lake.read_manifest(batch_predict.PREDICTIONS, DAY)["rows"] == 3
    assert s3_lake.read_partition(batch_predict.PREDICTIONS, DAY).equals(predictions)


def test_without_a_champion_nothing_is_written(spark, feature_lake, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    options = batch_predict.PredictOptions(model_name="never-registered")
    manifest = batch_predict.run(spark, feature_lake, date(2026, 11, 19), options)
    assert manifest["skipped"] is True
    assert not partition_path(feature_lake, batch_predict.PREDICTIONS, date(2026, 11, 19)).exists()
