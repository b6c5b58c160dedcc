"""Evaluation and registration of a day's model against a real MLflow registry on SQLite."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from lakeloop.evaluation import evaluate_model
from lakeloop.lake import partition_path
from lakeloop.models import MODEL_FILE, REGISTRATION, TRAIN_SUMMARY, model_dir, write_json
from lakeloop.registry import register_model

DAY = date(2026, 11, 20)
MODEL = "registry-test-fm"


@pytest.fixture
def day_model(lake, movielens):
    """A feature partition from real ratings and an FM saved where `train_model` would save it."""
    import keras

    from jobs.features import GENRES
    from jobs.fm_model import build_fm_model

    ratings = movielens.ratings.slice(0, 2000)
    rows = ratings.num_rows
    genres = pa.FixedSizeListArray.from_arrays(pa.array(np.eye(len(GENRES), dtype=np.float32)[
        np.arange(rows) % len(GENRES)].reshape(-1)), len(GENRES))
    features = pa.table({
        "user_idx": pc.cast(ratings["user_id"], pa.int64()),
        "item_idx": pc.cast(ratings["item_id"], pa.int64()),
        "year_idx": pa.array(np.arange(rows) % 22, pa.int64()),
        "genres": pc.cast(genres, pa.list_(pa.float32())),
        "label": pc.cast(ratings["rating"], pa.float32()),
        "split": pa.array(np.where(np.arange(rows) % 10 == 0, "test", "train")),
    })
    partition = partition_path(lake, "features/ratings", DAY)
    partition.mkdir(parents=True)
    pq.write_table(features, partition / "part-0.parquet")
    directory = model_dir(lake, MODEL, DAY)
    directory.mkdir(parents=True)
    keras.utils.set_random_seed(1)
    build_fm_model(factors=4).save(directory / MODEL_FILE)
    write_json(directory / TRAIN_SUMMARY, {"global_step": 10, "workers": 1, "rows": 1800})
    return lake


def test_evaluation_compares_with_the_global_mean(day_model):
    metrics = evaluate_model(day_model, MODEL, DAY, [DAY])
    labels = pq.read_table(partition_path(day_model, "features/ratings", DAY)).filter(
        pc.equal(pc.field("split"), "test"))["label"].to_numpy()
    assert metrics["test_rows"] == 200
    train_mean = metrics["baseline_mean"]
    assert metrics["baseline_rmse"] == pytest.approx(float(np.sqrt(np.mean((labels - train_mean) ** 2))), rel=1e-6)
    assert 0 < metrics["rmse"] < 5


def test_registration_is_idempotent_and_moves_the_champion_alias(day_model, tmp_path):
    from mlflow import MlflowClient

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    evaluate_model(day_model, MODEL, DAY, [DAY])
    first = register_model(day_model, MODEL, DAY, tracking)
    again = register_model(day_model, MODEL, DAY, tracking)
    assert again["version"] == first["version"] == "1"

    import keras

    from jobs.fm_model import build_fm_model

    keras.utils.set_random_seed(2)
    build_fm_model(factors=4).save(model_dir(day_model, MODEL, DAY) / MODEL_FILE)
    retrained = register_model(day_model, MODEL, DAY, tracking)
    assert retrained["version"] == "2"

    client = MlflowClient(tracking_uri=tracking)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert str(champion.version) == "2"
    assert champion.tags["lakeloop.day"] == DAY.isoformat()
    run = client.get_run(champion.run_id)
    assert "rmse" in run.data.metrics and "baseline_rmse" in run.data.metrics
    on_disk = json.loads((model_dir(day_model, MODEL, DAY) / REGISTRATION).read_text())
    assert on_disk["version"] == "2" and on_disk["model_uri"] == f"models:/{MODEL}@champion"
