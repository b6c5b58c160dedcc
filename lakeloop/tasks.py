"""The bodies of the DAG's Python tasks, kept out of the DAG file so it stays wiring only.

Both work on the lake at `Settings.lake_url`, local or on an object store (`lakeloop.lake.Lake`)."""

from __future__ import annotations

from datetime import date, datetime

from lakeloop.config import Settings


def evaluate_day(settings: Settings, day: date) -> dict:
    """Evaluate the day's model next to the registry's champion and the baselines, and apply the quality gate."""
    from lakeloop.evaluation import evaluate_model
    from lakeloop.registry import load_champion

    champion = load_champion(settings.model_name, settings.mlflow_tracking_uri)
    return evaluate_model(settings.lake_url, settings.model_name, day, champion, settings.gate_tolerance)


def register_day(settings: Settings, day: date, dag_id: str, run_id: str, data_interval_start: datetime,
                 data_interval_end: datetime) -> dict:
    """Register the day's model in the DAG run's MLflow run, aliased as the quality gate decided."""
    from lakeloop.features import FEATURES
    from lakeloop.lake import Lake
    from lakeloop.names import PREDICTIONS
    from lakeloop.registry import RunLineage, git_commit, register_model

    lake = Lake.from_url(settings.lake_url)
    lineage = RunLineage(dag_id=dag_id, run_id=run_id, data_interval_start=data_interval_start.isoformat(),
                         data_interval_end=data_interval_end.isoformat(),
                         features_path=lake.uri(lake.path(FEATURES)),
                         predictions_path=lake.uri(lake.path(PREDICTIONS)),
                         git_commit=git_commit(settings.project_dir))
    return register_model(lake, settings.model_name, day, settings.mlflow_tracking_uri, lineage)
