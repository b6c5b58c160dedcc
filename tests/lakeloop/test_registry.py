"""Evaluation and registration of a day's model against a real MLflow registry on SQLite."""

from __future__ import annotations

import json
from datetime import date

import pytest

from lakeloop.evaluation import evaluate_model
from lakeloop.models import MODEL_FILE, REGISTRATION, TRAIN_SUMMARY, model_dir, write_json
from lakeloop.registry import register_model

DAY = date(2026, 11, 20)
MODEL = "registry-test-fm"


@pytest.fixture
def day_model(feature_lake, untrained_model):
    """A real feature partition and an FM saved where `train_model` would save it."""
    directory = model_dir(feature_lake, MODEL, DAY)
    directory.mkdir(parents=True)
    untrained_model(feature_lake, seed=1).save(directory / MODEL_FILE)
    write_json(directory / TRAIN_SUMMARY, {"global_step": 10, "workers": 1, "rows": 1800})
    return feature_lake


def test_registration_is_idempotent_and_moves_the_champion_alias(day_model, untrained_model, tmp_path):
    from mlflow import MlflowClient

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    evaluate_model(day_model, MODEL, DAY)
    first = register_model(day_model, MODEL, DAY, tracking)
    again = register_model(day_model, MODEL, DAY, tracking)
    assert again["version"] == first["version"] == "1"

    untrained_model(day_model, seed=2).save(model_dir(day_model, MODEL, DAY) / MODEL_FILE)
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
