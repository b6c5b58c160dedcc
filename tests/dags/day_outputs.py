"""What a successful day of `daily_retrain` leaves in the lake and the registry, checked end to end."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pyarrow.compute as pc
import pyarrow.parquet as pq

from lakeloop.config import Settings
from lakeloop.delta import read_partition
from lakeloop.ingest.interval import read_manifest
from lakeloop.lake import as_lake
from lakeloop.models import EVALUATION, REGISTRATION, TRAIN_SUMMARY, model_dir
from lakeloop.names import CURATED_RATINGS, MOVIES, RAW_RATINGS, REJECTED_RATINGS
from tests.delta_protocol import read_day


def check_day_outputs(settings: Settings, events: int, day: date) -> None:
    """Counts reconcile from Kafka to the lake, the day's model beats both baselines and the gate made it the
    champion in an MLflow run that names its DAG run, and its top-10 predictions for every user (of movies
    the user has not rated) are in the lake."""
    lake = settings.lake_path
    counts = read_manifest(lake, RAW_RATINGS, day)["counts"]
    assert counts["read"] == events
    assert counts["read"] == counts["written"] + counts["rejected"]
    raw = read_day(lake / RAW_RATINGS, day)
    assert raw.num_rows == counts["written"] == events
    rejected = read_day(lake / REJECTED_RATINGS, day)
    assert rejected is not None and rejected.num_rows == counts["rejected"]
    curated = read_day(lake / CURATED_RATINGS, day)
    assert curated.num_rows == raw.num_rows
    train = read_day(lake / "features/train", day)
    assert train.num_rows + read_day(lake / "features/eval", day).num_rows == curated.num_rows

    models = model_dir(lake, settings.model_name, day)
    summary = json.loads((models / TRAIN_SUMMARY).read_text())
    assert summary["rows"] == train.num_rows
    assert summary["global_step"] > 0
    evaluation = json.loads((models / EVALUATION).read_text())
    assert evaluation["rmse"] < evaluation["bias_baseline_rmse"] < evaluation["baseline_rmse"]
    assert evaluation["gate"]["promote"] is True, evaluation["gate"]
    registration = json.loads((models / REGISTRATION).read_text())
    assert registration["alias"] == "champion"

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    # the day's version, not the alias's: a later day may have moved it
    champion = client.get_model_version(settings.model_name, registration["version"])
    assert champion.tags["lakeloop.day"] == day.isoformat()
    run = client.get_run(registration["run_id"])
    assert run.data.tags["lakeloop.dag_id"] == "daily_retrain"
    assert run.data.tags["lakeloop.dag_run"] == f"daily_retrain/{run.data.tags['lakeloop.run_id']}"
    assert run.data.tags["lakeloop.data_interval_start"].startswith(day.isoformat())
    assert run.data.metrics["rmse"] == evaluation["rmse"]
    trained_on = int(run.data.tags["lakeloop.trained_on.train"])  # lineage: the feature tables' versions
    assert run.data.tags["lakeloop.evaluated_on.eval"] == run.data.tags["lakeloop.trained_on.eval"]
    assert read_partition(as_lake(lake), "features/train", day, version=trained_on).num_rows == train.num_rows
    assert {"evaluation/prediction_distribution.png", "evaluation/training_curve.png"} <= {
        item.path for item in client.list_artifacts(registration["run_id"], "evaluation")}

    predictions = read_day(lake / "predictions", day)
    users = pc.count_distinct(curated["user_id"]).as_py()
    assert predictions.column_names == ["user_id", "item_id", "score", "rank", "model_name", "model_version",
                                        "generated_at"]
    assert predictions.num_rows == users * 10
    assert set(predictions["rank"].to_pylist()) == set(range(1, 11))
    assert set(predictions["model_version"].to_pylist()) == {str(champion.version)}
    assert set(predictions["model_name"].to_pylist()) == {settings.model_name}
    interval_end = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
    assert set(predictions["generated_at"].to_pylist()) == {interval_end}
    rated = set(zip(curated["user_id"].to_pylist(), curated["item_id"].to_pylist(), strict=True))
    recommended = zip(predictions["user_id"].to_pylist(), predictions["item_id"].to_pylist(), strict=True)
    assert not rated.intersection(recommended)
    assert predictions.schema.field("item_id").type == "string"
    catalog = {str(item) for item in pq.read_table(lake / MOVIES, columns=["item_id"])["item_id"].to_pylist()}
    assert set(predictions["item_id"].to_pylist()) <= catalog
    assert pc.all(curated["in_catalog"]).as_py(), "a rated movie was not found in the catalog"
    assert (lake / "checkpoints" / settings.model_name).is_dir()
