"""The short report `make run` ends with: rows per day, eval RMSE, the registered model, predictions."""

from __future__ import annotations

from datetime import date

from lakeloop.config import Settings
from lakeloop.lake import Lake
from lakeloop.models import EVALUATION, REGISTRATION
from lakeloop.names import PREDICTIONS, RAW_RATINGS


def summarise(settings: Settings, days: list[date]) -> dict:
    """What the lake holds for each day: manifests, evaluation, registration and predictions."""
    lake = Lake.from_url(settings.lake_url)
    report = {}
    for day in days:
        raw = lake.read_manifest(RAW_RATINGS, day) or {}
        models = lake.partition(f"models/{settings.model_name}", day)
        predictions = lake.read_manifest(PREDICTIONS, day)
        report[day.isoformat()] = {
            "raw": raw.get("counts", raw),
            "evaluation": lake.read_json(f"{models}/{EVALUATION}"),
            "registration": lake.read_json(f"{models}/{REGISTRATION}"),
            "predictions": predictions,
            "predictions_path": lake.uri(lake.partition(PREDICTIONS, day)) if predictions else None,
        }
    return report


def holds_nothing(report: dict) -> bool:
    """Whether a `summarise` report found nothing at all for its days: no ingested ratings, no evaluation, no
    registration, no predictions (an empty lake, another lake, or days nothing ran for)."""
    return not any(entry["raw"] or entry["evaluation"] or entry["registration"] or entry["predictions"]
                   for entry in report.values())


def print_summary(settings: Settings, days: list[date], report: dict | None = None) -> None:
    """Print the summary table of `summarise` (the given report of those days, else a fresh one)."""
    print(f"\nlakeloop summary (lake {settings.lake_url}, model {settings.model_name})")
    for day, entry in (report if report is not None else summarise(settings, days)).items():
        raw = entry["raw"] or {}
        evaluation = entry["evaluation"] or {}
        registration = entry["registration"] or {}
        rmse = f"{evaluation['rmse']:.4f} (baseline {evaluation['baseline_rmse']:.4f})" if evaluation else "-"
        model = (f"{registration['model_name']} v{registration['version']} @{registration['alias']}"
                 if registration else "-")
        print(f"  {day}: ingested {raw.get('written', '-')} (read {raw.get('read', '-')}, "
              f"rejected {raw.get('rejected', '-')}) | eval RMSE {rmse} | {model} | "
              f"predictions {entry['predictions_path'] or '-'}")
