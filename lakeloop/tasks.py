"""The bodies of the DAG's Python tasks, kept out of the DAG file so it stays wiring only."""

from __future__ import annotations

from datetime import date, datetime

from lakeloop.config import Settings


def evaluate_day(settings: Settings, day: date) -> dict:
    """Evaluate the day's model next to the registry's champion and the baselines, and apply the quality gate."""
    from lakeloop.evaluation import evaluate_model
    from lakeloop.registry import load_champion

    champion = load_champion(settings.model_name, settings.mlflow_tracking_uri)
    return evaluate_model(settings.lake_path, settings.model_name, day, champion, settings.gate_tolerance)


def register_day(settings: Settings, day: date, dag_id: str, run_id: str, data_interval_start: datetime,
                 data_interval_end: datetime) -> dict:
    """Register the day's model in the DAG run's MLflow run, aliased as the quality gate decided."""
    from jobs.feature_spec import feature_partition
    from lakeloop.lake import PREDICTIONS, partition_path
    from lakeloop.registry import RunLineage, git_commit, register_model

    lineage = RunLineage(dag_id=dag_id, run_id=run_id, data_interval_start=data_interval_start.isoformat(),
                         data_interval_end=data_interval_end.isoformat(),
                         features_path=feature_partition(settings.lake_path, day).as_uri(),
                         predictions_path=partition_path(settings.lake_path, PREDICTIONS, day).as_uri(),
                         git_commit=git_commit(settings.project_dir))
    return register_model(settings.lake_path, settings.model_name, day, settings.mlflow_tracking_uri, lineage)
