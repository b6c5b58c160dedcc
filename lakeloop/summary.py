"""The short report `make run` ends with: rows per day, each scorer's RMSE and NDCG@10 as the evaluation measured
them, the quality gate's decision and reason, the registered model, where to look (MLflow, predictions)."""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from datetime import date

from lakeloop.airflow_env import DEFAULT_MLFLOW_UI_URL
from lakeloop.config import Settings
from lakeloop.delta import partition_summary
from lakeloop.lake import Lake
from lakeloop.models import EVALUATION, REGISTRATION
from lakeloop.names import PREDICTIONS, RAW_RATINGS

RMSE, NDCG_AT_10 = "rmse", "ndcg_at_10"
MODEL_SCORER = "model"
# `baseline_rmse` is the training mean predicted for every rating, a yardstick the gate does not use.
SCORER_LABELS = {"": MODEL_SCORER, "baseline_": "global mean"}
MLFLOW_ANSWER_TIMEOUT_S = 2.0


def scorer_metrics(evaluation: dict) -> dict[str, dict[str, float | None]]:
    """Each scorer's RMSE and NDCG@10 in an `evaluation.json`, from every `<prefix>rmse` / `<prefix>ndcg_at_10`
    number it holds (the model's have no prefix), so a scorer the evaluation adds shows up without a change here.
    The model first, then the others by name; a metric a scorer lacks is None."""
    scorers: dict[str, dict[str, float | None]] = {}
    for key, value in evaluation.items():
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        for metric in (RMSE, NDCG_AT_10):
            prefix = key.removesuffix(metric)
            if prefix != key and (prefix == "" or prefix.endswith("_")):
                name = SCORER_LABELS.get(prefix, prefix.rstrip("_").replace("_", " "))
                scorers.setdefault(name, {RMSE: None, NDCG_AT_10: None})[metric] = float(value)
    return dict(sorted(scorers.items(), key=lambda item: (item[0] != MODEL_SCORER, item[0])))


def mlflow_run_url(run_id: str | None) -> str | None:
    """The MLflow UI page of a run, if an MLflow server answers at `LAKELOOP_MLFLOW_UI_URL` (it names the run's
    experiment); None without a run or a server."""
    if not run_id:
        return None
    base = os.environ.get("LAKELOOP_MLFLOW_UI_URL", DEFAULT_MLFLOW_UI_URL).rstrip("/")
    query = urllib.parse.urlencode({"run_id": run_id})
    try:
        with urllib.request.urlopen(f"{base}/api/2.0/mlflow/runs/get?{query}",
                                    timeout=MLFLOW_ANSWER_TIMEOUT_S) as response:
            experiment_id = json.load(response)["run"]["info"]["experiment_id"]
    except (OSError, ValueError, KeyError):
        return None
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def summarise(settings: Settings, days: list[date]) -> dict:
    """What the lake holds for each day: the ingestion's counts (the raw Delta commit's summary), evaluation (with
    each scorer's RMSE and NDCG@10 and the gate's decision), registration (with the MLflow run's URL when a server
    answers) and predictions."""
    lake = Lake.from_url(settings.lake_url)
    report = {}
    for day in days:
        raw = partition_summary(lake, RAW_RATINGS, day) or {}
        models = lake.partition(f"models/{settings.model_name}", day)
        evaluation = lake.read_json(f"{models}/{EVALUATION}")
        registration = lake.read_json(f"{models}/{REGISTRATION}")
        predictions = partition_summary(lake, PREDICTIONS, day)
        report[day.isoformat()] = {
            "raw": raw.get("counts", raw),
            "evaluation": evaluation,
            "scorers": scorer_metrics(evaluation or {}),
            "gate": (evaluation or {}).get("gate"),
            "registration": registration,
            "mlflow_run_url": mlflow_run_url((registration or {}).get("run_id")),
            "predictions": predictions,
            "predictions_path": lake.uri(lake.path(PREDICTIONS)) if predictions else None,
        }
    return report


def holds_nothing(report: dict) -> bool:
    """Whether a `summarise` report found nothing at all for its days: no ingested ratings, no evaluation, no
    registration, no predictions (an empty lake, another lake, or days nothing ran for)."""
    return not any(entry["raw"] or entry["evaluation"] or entry["registration"] or entry["predictions"]
                   for entry in report.values())


def metric_cell(value: float | None) -> str:
    """A metric as the table shows it: four decimals, or `-` when the scorer has none."""
    return f"{value:.4f}" if value is not None else "-"


def day_lines(day: str, entry: dict) -> list[str]:
    """One day of the summary: ingestion, the scorers' table, the gate, the model, where to look."""
    raw = entry["raw"] or {}
    lines = [f"{day}  ingested {raw.get('written', '-')} (read {raw.get('read', '-')}, "
             f"rejected {raw.get('rejected', '-')})"]
    if entry["scorers"]:
        width = max(len("scorer"), *(len(name) for name in entry["scorers"]))
        lines.append(f"  {'scorer':<{width}}  {'RMSE':>7}  {'NDCG@10':>7}")
        lines += [f"  {name:<{width}}  {metric_cell(values[RMSE]):>7}  {metric_cell(values[NDCG_AT_10]):>7}"
                  for name, values in entry["scorers"].items()]
    else:
        lines.append("  no evaluation")
    gate = entry["gate"]
    if gate:
        lines.append(f"  gate: {'promoted' if gate.get('promote') else 'not promoted'} "
                     f"(@{gate.get('alias', '-')}): {gate.get('reason', '-')}")
    registration = entry["registration"]
    if registration:
        champion = registration.get("champion_version")
        lines.append(f"  registered: {registration['model_name']} v{registration['version']} "
                     f"@{registration['alias']}" + (f"; champion is v{champion}" if champion else ""))
        url = entry["mlflow_run_url"]
        lines.append(f"  MLflow run: {url}" if url else
                     f"  MLflow run: {registration.get('run_id') or '-'} (no MLflow UI answers: `make ui` serves one)")
    predictions = entry["predictions"] or {}
    rows = (f" (Delta table, dt={day}: {predictions['rows']} rows, {predictions.get('users', '-')} users)"
            if "rows" in predictions else "")
    lines.append(f"  predictions: {entry['predictions_path'] or '-'}{rows}")
    return lines


def print_summary(settings: Settings, days: list[date], report: dict | None = None) -> None:
    """Print the summary of `summarise` (the given report of those days, else a fresh one)."""
    print(f"\nlakeloop summary (lake {settings.lake_url}, model {settings.model_name})")
    for day, entry in (report if report is not None else summarise(settings, days)).items():
        print("\n".join(day_lines(day, entry)))
