"""The short report `make run` ends with: rows per day, eval RMSE, the registered model, predictions."""

from __future__ import annotations

import json
from datetime import date

from lakeloop.config import Settings
from lakeloop.lake import PREDICTIONS, partition_path
from lakeloop.models import EVALUATION, REGISTRATION, model_dir


def _json_or_none(path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def summarise(settings: Settings, days: list[date]) -> dict:
    """What the lake holds for each day: manifests, evaluation, registration and predictions."""
    lake = settings.lake_path
    report = {}
    for day in days:
        raw = _json_or_none(partition_path(lake, "raw/ratings", day) / "_manifest.json") or {}
        models = model_dir(lake, settings.model_name, day)
        predictions = partition_path(lake, PREDICTIONS, day)
        report[day.isoformat()] = {
            "raw": raw.get("counts", raw),
            "evaluation": _json_or_none(models / EVALUATION),
            "registration": _json_or_none(models / REGISTRATION),
            "predictions": _json_or_none(predictions / "_manifest.json"),
            "predictions_path": str(predictions) if predictions.exists() else None,
        }
    return report


def print_summary(settings: Settings, days: list[date]) -> None:
    """Print the summary table of `summarise`."""
    print(f"\nlakeloop summary (lake {settings.lake_url}, model {settings.model_name})")
    for day, entry in summarise(settings, days).items():
        raw = entry["raw"] or {}
        evaluation = entry["evaluation"] or {}
        registration = entry["registration"] or {}
        rmse = f"{evaluation['rmse']:.4f} (baseline {evaluation['baseline_rmse']:.4f})" if evaluation else "-"
        model = (f"{registration['model_name']} v{registration['version']} @{registration['alias']}"
                 if registration else "-")
        print(f"  {day}: ingested {raw.get('written', '-')} (read {raw.get('read', '-')}, "
              f"rejected {raw.get('rejected', '-')}) | eval RMSE {rmse} | {model} | "
              f"predictions {entry['predictions_path'] or '-'}")
