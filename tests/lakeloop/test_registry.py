"""The quality gate and the MLflow registry together, on a real MLflow store (SQLite): which version becomes
`champion` or `challenger`, one MLflow run per DAG run, and reruns that register nothing twice.

The models are fitted on the evaluation rows too (`fitted_model`), so more epochs mean a lower evaluation
RMSE and each step's gate decision is known in advance; the untrained model predicts about the mean."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, date, datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from lakeloop.evaluation import evaluate_model
from lakeloop.features import model_inputs, read_features
from lakeloop.models import (
    EVALUATION,
    MODEL_FILE,
    REGISTRATION,
    REPORT_DIR,
    TRAIN_SUMMARY,
    ModelDirectory,
    model_dir,
    write_json,
)
from lakeloop.registry import (
    DAG_RUN_TAG,
    RegistryUnavailableError,
    RunLineage,
    aliased_version,
    file_sha256,
    git_commit,
    load_champion,
    model_requirements,
    register_model,
    registered_towers,
)
from lakeloop.services import free_port
from lakeloop.towers import FMTowers

DAY = date(2026, 11, 20)
MODEL = "registry-test-fm"


def lineage(run_id: str) -> RunLineage:
    """The lineage of a DAG run of the day."""
    return RunLineage(dag_id="daily_retrain", run_id=run_id,
                      data_interval_start=datetime(2026, 11, 20, tzinfo=UTC).isoformat(),
                      data_interval_end=datetime(2026, 11, 21, tzinfo=UTC).isoformat(),
                      features_path="file:///lake/features/dt=2026-11-20",
                      predictions_path="file:///lake/predictions",
                      git_commit=git_commit(Path(__file__).parent))


@pytest.fixture
def tracking(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def retrain(lake, tracking: str, model, run_id: str) -> tuple[dict, dict]:
    """What one DAG run does with a trained model: evaluate it against the champion, then register it."""
    directory = model_dir(lake, MODEL, DAY)
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / MODEL_FILE)
    write_json(directory / TRAIN_SUMMARY, {"global_step": 10, "rows": 1800, "epoch_losses": [1.2, 0.9],
                                           "epoch_metrics": [{"epoch": 1, "loss": 1.2, "examples_per_second": 900.0},
                                                             {"epoch": 2, "loss": 0.9, "examples_per_second": 950.0}]})
    metrics = evaluate_model(lake, MODEL, DAY, load_champion(MODEL, tracking))
    return metrics, register_model(lake, MODEL, DAY, tracking, lineage(run_id))


@pytest.mark.slow
def test_the_gate_decides_the_alias_and_reruns_register_nothing_twice(feature_lake, tracking, fitted_model,
                                                                       untrained_model):
    from mlflow import MlflowClient
    from mlflow.models import get_model_info

    client = MlflowClient(tracking_uri=tracking)

    first_metrics, first = retrain(feature_lake, tracking, fitted_model(feature_lake, epochs=8), "run-1")
    assert (first["version"], first["alias"], first["promoted"]) == ("1", "champion", True)
    assert "no champion" in first_metrics["gate"]["reason"]

    worse_metrics, worse = retrain(feature_lake, tracking, fitted_model(feature_lake, epochs=3), "run-2")
    assert worse_metrics["champion_version"] == "1"
    assert worse_metrics["champion_rmse"] == pytest.approx(first_metrics["rmse"], rel=1e-6)
    assert worse_metrics["rmse"] > worse_metrics["champion_rmse"] * 1.01
    assert (worse["version"], worse["alias"], worse["promoted"], worse["champion_version"]) == (
        "2", "challenger", False, "1")
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"

    better_metrics, better = retrain(feature_lake, tracking, fitted_model(feature_lake, epochs=30), "run-3")
    assert better_metrics["rmse"] < better_metrics["champion_rmse"] == pytest.approx(first_metrics["rmse"], rel=1e-6)
    assert (better["version"], better["alias"], better["promoted"]) == ("3", "champion", True)
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "3"
    assert str(client.get_model_version_by_alias(MODEL, "challenger").version) == "2"

    again = register_model(feature_lake, MODEL, DAY, tracking, lineage("run-3"))
    assert again == better
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == 3
    [run] = client.search_runs([client.get_experiment_by_name(MODEL).experiment_id],
                               f"tags.`{DAG_RUN_TAG}` = 'daily_retrain/run-3'")
    assert run.info.run_id == better["run_id"]
    tags = run.data.tags
    assert tags["lakeloop.dag_id"] == "daily_retrain" and tags["lakeloop.run_id"] == "run-3"
    assert tags["lakeloop.data_interval_start"].startswith("2026-11-20")
    assert tags["lakeloop.features_path"].endswith("features/dt=2026-11-20")
    assert tags["lakeloop.predictions_path"] == "file:///lake/predictions"
    assert tags["mlflow.source.git.commit"] == git_commit(Path(__file__).parent) != ""
    assert tags["lakeloop.gate.alias"] == "champion" and tags["lakeloop.gate.promote"] == "True"
    assert run.data.metrics["rmse"] == pytest.approx(better_metrics["rmse"])
    assert run.data.metrics["champion_rmse"] == pytest.approx(better_metrics["champion_rmse"])
    assert {"ndcg_at_10", "mae", "bias_baseline_rmse"} <= set(run.data.metrics)
    assert run.data.params["global_step"] == "10"
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/prediction_distribution.png", "evaluation/rmse_by_user_activity.png",
            "evaluation/training_curve.png", "evaluation/report.md", "evaluation/evaluation.json"} <= artifacts

    info = get_model_info(f"models:/{MODEL}/3")
    assert info.signature is not None and "user_idx" in info.signature.inputs.input_names()
    assert info.saved_input_example_info is not None
    on_disk = json.loads((model_dir(feature_lake, MODEL, DAY) / REGISTRATION).read_text())
    assert on_disk == better and on_disk["model_uri"] == f"models:/{MODEL}/3"

    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train_loss")] == [(1, 1.2), (2, 0.9)]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_examples_per_second")] == [1, 2]
    assert_the_saved_model_scores_as_the_keras_model(feature_lake, tracking, better["run_id"])
    assert_the_logged_towers_are_the_models(feature_lake, tracking)


def assert_the_logged_towers_are_the_models(lake, tracking: str) -> None:
    """The version's `towers/` artifact holds the Keras model's towers; a version registered without them has
    none."""
    import keras
    import mlflow
    from mlflow import MlflowClient

    logged = registered_towers(MODEL, "3", tracking)
    expected = FMTowers.of(keras.saving.load_model(model_dir(lake, MODEL, DAY) / MODEL_FILE))
    inputs = model_inputs(read_features(lake, DAY, "eval"))
    for side in ("user_tower", "item_tower"):
        np.testing.assert_array_equal(getattr(logged, side)(inputs).factors, getattr(expected, side)(inputs).factors)
        np.testing.assert_array_equal(getattr(logged, side)(inputs).bias, getattr(expected, side)(inputs).bias)
    assert logged.constant == expected.constant

    client = MlflowClient(tracking_uri=tracking)
    mlflow.set_tracking_uri(tracking)
    with mlflow.start_run() as bare:
        mlflow.log_dict({"registered": "by hand"}, "note.json")
    client.create_registered_model("registered-without-towers")
    client.create_model_version("registered-without-towers", f"runs:/{bare.info.run_id}/model", bare.info.run_id)
    assert registered_towers("registered-without-towers", "1", tracking) is None


def assert_the_saved_model_scores_as_the_keras_model(lake, tracking: str, run_id: str) -> None:
    """The run's `saved_model/` artifact, loaded by TensorFlow alone, gives the Keras model's outputs."""
    import keras
    import mlflow
    import tensorflow as tf

    mlflow.set_tracking_uri(tracking)
    served = tf.saved_model.load(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/saved_model"))
    inputs = model_inputs(read_features(lake, DAY, "eval").slice(0, 64))
    signature = served.signatures["serving_default"]
    outputs = signature(**{name: tf.constant(inputs[name]) for name in signature.structured_input_signature[1]})
    expected = keras.saving.load_model(model_dir(lake, MODEL, DAY) / MODEL_FILE).predict(inputs, verbose=0)
    assert set(outputs) == set(expected) == {"rating", "ranking_score"}
    for name, values in expected.items():
        np.testing.assert_allclose(outputs[name].numpy().reshape(-1), np.asarray(values).reshape(-1), rtol=1e-5,
                                   atol=1e-5)


@pytest.mark.slow
def test_a_model_that_does_not_beat_the_baseline_is_only_a_challenger(feature_lake, tracking, untrained_model):
    from mlflow import MlflowClient

    metrics, registration = retrain(feature_lake, tracking, untrained_model(feature_lake, seed=3), "run-1")
    assert metrics["rmse"] >= metrics["bias_baseline_rmse"]
    assert "does not beat the bias baseline" in metrics["gate"]["reason"]
    assert (registration["alias"], registration["promoted"], registration["champion_version"]) == (
        "challenger", False, None)
    client = MlflowClient(tracking_uri=tracking)
    assert str(client.get_model_version_by_alias(MODEL, "challenger").version) == registration["version"]
    assert load_champion(MODEL, tracking) is None


@pytest.mark.slow
def test_a_model_in_an_s3_lake_is_evaluated_as_in_a_local_lake_and_registered(feature_lake, s3_feature_lake,
                                                                               fitted_model, store_model, tmp_path):
    import mlflow
    from mlflow import MlflowClient

    name, summary = "registry-s3-test-fm", {"global_step": 10, "rows": 1800, "epoch_losses": [1.2, 0.9]}
    model_file = tmp_path / MODEL_FILE
    model = fitted_model(feature_lake, epochs=8)
    model.save(model_file)

    store_model(feature_lake, name, model_file, summary)
    local_metrics = evaluate_model(feature_lake, name, DAY)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store_model(s3_feature_lake, name, model_file, summary)

    s3_metrics = evaluate_model(s3_feature_lake, name, DAY, load_champion(name, tracking))
    registration = register_model(s3_feature_lake, name, DAY, tracking, lineage("run-1"))

    assert s3_metrics == local_metrics and s3_metrics["gate"]["alias"] == "champion"
    assert registration == {"model_name": name, "version": "1", "alias": "champion", "run_id": registration["run_id"],
                            "day": str(DAY), "model_sha256": file_sha256(model_file), "promoted": True,
                            "champion_version": "1", "dag_run": "daily_retrain/run-1", "model_uri": f"models:/{name}/1"}
    remote = ModelDirectory.of(s3_feature_lake, name, DAY)
    assert remote.read_json(REGISTRATION) == registration
    assert remote.read_json(EVALUATION) == s3_metrics
    assert all(remote.files.read_bytes(f"{REPORT_DIR}/{file}") for file in ("report.md", "training_curve.png"))
    client = MlflowClient(tracking_uri=tracking)
    run = client.get_run(registration["run_id"])
    assert run.info.artifact_uri.startswith(f"{s3_feature_lake.url}/mlflow-artifacts/")
    assert run.data.params["global_step"] == "10" and run.data.metrics["rmse"] == pytest.approx(s3_metrics["rmse"])
    assert {f"{REPORT_DIR}/report.md", f"{REPORT_DIR}/{EVALUATION}"} <= {
        item.path for item in client.list_artifacts(run.info.run_id, REPORT_DIR)}
    requirements = Path(mlflow.pyfunc.get_model_dependencies(f"models:/{name}/1")).read_text().split()
    assert requirements == [f"mlflow=={metadata.version('mlflow')}", *model_requirements()]
    champion = load_champion(name, tracking)
    example = model_inputs(read_features(s3_feature_lake, DAY, "eval"))
    served, trained = champion.model.predict(example, verbose=0), model.predict(example, verbose=0)
    for output in ("rating", "ranking_score"):
        np.testing.assert_allclose(served[output], trained[output], rtol=1e-6)


def test_a_missing_model_or_alias_is_no_version(tracking):
    from mlflow import MlflowClient

    assert aliased_version("never-registered", "champion", tracking) is None
    MlflowClient(tracking_uri=tracking).create_registered_model("registered-without-alias")
    assert aliased_version("registered-without-alias", "champion", tracking) is None


def test_a_locked_registry_database_fails_instead_of_reading_as_no_champion(tracking, tmp_path):
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=tracking).create_registered_model(MODEL)
    holder = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another writer holds the database: readers cannot get in either
    try:
        with pytest.raises(RegistryUnavailableError, match=f"could not say which version of {MODEL}"):
            load_champion(MODEL, tracking)  # what evaluation asks before the quality gate decides
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_registry_server_that_does_not_answer_fails_the_lookup(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    stopped = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(RegistryUnavailableError, match=stopped):
        aliased_version(MODEL, "champion", stopped)
