"""Where a day's model artefacts live in the lake: `<lake>/models/<model>/dt=YYYY-MM-DD/`."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from lakeloop.lake import partition_path

MODEL_FILE = "model.keras"
TRAIN_SUMMARY = "train_summary.json"
EVALUATION = "evaluation.json"
REGISTRATION = "registration.json"


def model_dir(lake: Path, model_name: str, day: date) -> Path:
    """The day's model directory (trained model, training summary, evaluation, registration)."""
    return partition_path(lake, f"models/{model_name}", day)


def read_json(path: Path) -> dict:
    """Read one of the JSON artefacts, naming the upstream task when it is missing."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the upstream task for this day first")
    return json.loads(path.read_text())


def write_json(path: Path, payload: dict) -> None:
    """Write a JSON artefact atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    temp.replace(path)
