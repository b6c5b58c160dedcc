"""Register a day's model in the MLflow model registry and point the `champion` alias at it.

Registration is idempotent: a version already registered for the same day and the same model file
(tags `lakeloop.day` and `lakeloop.model_sha256`) is reused instead of creating a duplicate.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import date
from pathlib import Path
from urllib.parse import urlparse

from lakeloop.models import EVALUATION, MODEL_FILE, REGISTRATION, TRAIN_SUMMARY, model_dir, read_json, write_json

log = logging.getLogger(__name__)
CHAMPION = "champion"


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _use_experiment(client, name: str, lake: Path) -> None:
    """Make `name` the active experiment; a new one on a local store keeps its artifacts in the lake.

    Without an artifact location, MLflow on a SQLite store writes artifacts to `./mlruns` of whatever
    directory the task happens to run in.
    """
    import mlflow

    if client.get_experiment_by_name(name) is None and urlparse(mlflow.get_tracking_uri()).scheme in ("sqlite", ""):
        client.create_experiment(name, artifact_location=(lake / "mlflow-artifacts").as_uri())
    mlflow.set_experiment(name)


def register_model(lake: Path, model_name: str, day: date, tracking_uri: str) -> dict:
    """Log the day's model with its metrics to MLflow, register it and alias it `champion`."""
    import keras
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    from lakeloop.evaluation import model_inputs, read_features

    directory = model_dir(lake, model_name, day)
    model_path = directory / MODEL_FILE
    evaluation = read_json(directory / EVALUATION)
    summary = read_json(directory / TRAIN_SUMMARY)
    sha = file_sha256(model_path)
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    existing = client.search_model_versions(
        f"name = '{model_name}' and tag.`lakeloop.day` = '{day}' and tag.`lakeloop.model_sha256` = '{sha}'")
    if existing:
        version = str(existing[0].version)
        run_id = existing[0].run_id
        log.info("model for %s already registered as %s version %s", day, model_name, version)
    else:
        model = keras.saving.load_model(model_path)
        example = model_inputs(read_features(lake, day, "eval").slice(0, 5))
        _use_experiment(client, model_name, lake)
        with mlflow.start_run(run_name=f"{model_name}-{day}") as run:
            mlflow.log_params({key: value for key, value in summary.items() if not isinstance(value, dict | list)})
            mlflow.log_metrics({key: float(value) for key, value in evaluation.items()
                                if isinstance(value, int | float)})
            info = mlflow.tensorflow.log_model(
                model, name="model", registered_model_name=model_name,
                signature=infer_signature(example, model.predict(example, verbose=0)))
            run_id = run.info.run_id
        version = str(info.registered_model_version)
        client.set_model_version_tag(model_name, version, "lakeloop.day", str(day))
        client.set_model_version_tag(model_name, version, "lakeloop.model_sha256", sha)
    client.set_registered_model_alias(model_name, CHAMPION, version)
    registration = {"model_name": model_name, "version": str(version), "alias": CHAMPION, "run_id": run_id,
                    "day": str(day), "model_sha256": sha, "model_uri": f"models:/{model_name}@{CHAMPION}"}
    write_json(directory / REGISTRATION, registration)
    return registration
