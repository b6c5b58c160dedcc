"""The whole daily loop, end to end, on real components: `airflow dags test daily_retrain D`.

A slice of MovieLens goes through the embedded Kafka-protocol broker over TCP, real Spark (local),
real TensorFlow (trained on Spark), and a real MLflow registry on SQLite. Counts must reconcile from
Kafka to the lake, and a champion model must exist whose predictions land in the lake.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from lakeloop.config import load_settings
from lakeloop.lake import partition_path
from lakeloop.models import EVALUATION, REGISTRATION, TRAIN_SUMMARY, model_dir
from lakeloop.movielens import MovieLens
from lakeloop.replay import replay

DAY = date(2026, 11, 20)
EVENTS = 20_000


@pytest.mark.slow
def test_daily_retrain_end_to_end(kafka_broker, movielens, tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "LAKELOOP_"))}
    env.update({
        "LAKELOOP_STATE_DIR": str(tmp_path / "state"),
        "LAKELOOP_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
        "LAKELOOP_RATINGS_TOPIC": "e2e-ratings",
        "LAKELOOP_MODEL_NAME": "e2e-fm",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    })
    settings = load_settings(env)
    lake = settings.lake_path
    published = replay(MovieLens(movielens.ratings.slice(0, EVENTS), movielens.movies),
                       settings.kafka_bootstrap, settings.ratings_topic, lake, days=1, end_day=DAY)
    assert published.events_per_day == {DAY.isoformat(): EVENTS}

    lakeloop = str(Path(sys.executable).parent / "lakeloop")
    run = subprocess.run([lakeloop, "airflow", "dags", "test", "daily_retrain", DAY.isoformat()], env=env,
                         capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-5000:]

    raw_manifest = json.loads((partition_path(lake, "raw/ratings", DAY) / "_manifest.json").read_text())
    counts = raw_manifest["counts"]
    assert counts["read"] == EVENTS
    assert counts["read"] == counts["written"] + counts["rejected"]
    raw = pq.read_table(partition_path(lake, "raw/ratings", DAY))
    assert raw.num_rows == counts["written"] == EVENTS
    curated = pq.read_table(partition_path(lake, "curated/ratings", DAY))
    assert curated.num_rows == raw.num_rows
    features = pq.read_table(partition_path(lake, "features/ratings", DAY))
    assert features.num_rows == curated.num_rows

    models = model_dir(lake, settings.model_name, DAY)
    summary = json.loads((models / TRAIN_SUMMARY).read_text())
    assert summary["rows"] == pc.sum(pc.equal(features["split"], "train")).as_py()
    assert summary["global_step"] > 0
    evaluation = json.loads((models / EVALUATION).read_text())
    assert evaluation["rmse"] < evaluation["baseline_rmse"]
    registration = json.loads((models / REGISTRATION).read_text())

    from mlflow import MlflowClient

    champion = MlflowClient(tracking_uri=settings.mlflow_tracking_uri).get_model_version_by_alias(
        settings.model_name, "champion")
    assert str(champion.version) == registration["version"]
    assert champion.tags["lakeloop.day"] == DAY.isoformat()

    predictions = pq.read_table(partition_path(lake, "predictions", DAY))
    users = pc.count_distinct(curated["user_id"]).as_py()
    assert predictions.num_rows == users * 10
    assert set(predictions["rank"].to_pylist()) == set(range(1, 11))
    assert set(predictions["model_version"].to_pylist()) == {str(champion.version)}
    rated = set(zip(curated["user_id"].to_pylist(), curated["item_id"].to_pylist(), strict=True))
    recommended = zip(predictions["user_id"].to_pylist(), predictions["item_id"].to_pylist(), strict=True)
    assert not rated.intersection(recommended)
    assert (lake / "checkpoints" / settings.model_name).is_dir()
