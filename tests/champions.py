"""A day's model made the registry's `champion` by the steps the DAG takes (evaluate, register), for tests that score
with whichever version is the champion."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from lakeloop.evaluation import evaluate_model
from lakeloop.models import MODEL_FILE, TRAIN_SUMMARY, model_dir, write_json
from lakeloop.registry import RunLineage, register_model


def register_champion(lake: Path, model, model_name: str, day: date, tracking: str) -> dict:
    """Save `model` as the day's trained model in `lake`, evaluate and register it in the MLflow store `tracking`,
    and alias it `champion` (by hand if the quality gate kept it out); return the registration."""
    from mlflow import MlflowClient

    directory = model_dir(lake, model_name, day)
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / MODEL_FILE)
    write_json(directory / TRAIN_SUMMARY, {"global_step": 10})
    evaluate_model(lake, model_name, day)
    lineage = RunLineage("daily_retrain", "run-1", f"{day}T00:00:00+00:00", f"{day + timedelta(days=1)}T00:00:00+00:00",
                         "features", "predictions", "unknown")
    registration = register_model(lake, model_name, day, tracking, lineage)
    MlflowClient(tracking).set_registered_model_alias(model_name, "champion", registration["version"])
    return registration
