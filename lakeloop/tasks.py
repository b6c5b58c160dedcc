"""The bodies of the DAG's Python tasks, kept out of the DAG file so it stays wiring only."""

from __future__ import annotations

from datetime import date

from lakeloop.config import Settings


def evaluate_day(settings: Settings, day: date) -> dict:
    """Evaluate the day's model on the evaluation set of the day's feature partition."""
    from lakeloop.evaluation import evaluate_model

    return evaluate_model(settings.lake_path, settings.model_name, day)


def register_day(settings: Settings, day: date) -> dict:
    """Register the day's model and point the `champion` alias at it."""
    from lakeloop.registry import register_model

    return register_model(settings.lake_path, settings.model_name, day, settings.mlflow_tracking_uri)
