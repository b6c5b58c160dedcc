"""Offline evaluation of a day's model: RMSE on the held-out split against a global-mean baseline."""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from lakeloop.lake import partition_path
from lakeloop.models import EVALUATION, MODEL_FILE, model_dir, write_json

log = logging.getLogger(__name__)
FEATURES = "features/ratings"
INPUTS = ["user_idx", "item_idx", "year_idx", "genres"]


def read_features(lake: Path, days: list[date], split: str) -> pa.Table:
    """The given split of the feature partitions that exist among `days`."""
    paths = [partition_path(lake, FEATURES, day) for day in days]
    existing = [str(path) for path in paths if path.exists()]
    if not existing:
        raise FileNotFoundError(f"no feature partitions under {lake / FEATURES} for {days[0]}..{days[-1]}")
    dataset = ds.dataset([ds.dataset(path, format="parquet") for path in existing])
    return dataset.to_table(columns=[*INPUTS, "label"], filter=ds.field("split") == split)


def model_inputs(data: pa.Table | pa.RecordBatch) -> dict[str, np.ndarray]:
    """The FM's input dict from a feature table or batch, without per-row Python."""
    genres = data.column("genres")
    if isinstance(genres, pa.ChunkedArray):
        genres = genres.combine_chunks()
    return {
        "user_idx": data.column("user_idx").to_numpy(),
        "item_idx": data.column("item_idx").to_numpy(),
        "year_idx": data.column("year_idx").to_numpy(),
        "genres": genres.flatten().to_numpy().reshape(data.num_rows, -1).astype(np.float32),
    }


def rmse(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Root mean squared error."""
    return float(np.sqrt(np.mean((predictions - labels) ** 2)))


def evaluate_model(lake: Path, model_name: str, day: date, days: list[date]) -> dict:
    """Score the day's trained model on the test split of `days`; write and return the metrics."""
    import keras

    directory = model_dir(lake, model_name, day)
    model = keras.saving.load_model(directory / MODEL_FILE)
    test = read_features(lake, days, "test")
    train_labels = read_features(lake, days, "train")["label"].to_numpy()
    labels = test["label"].to_numpy().astype(np.float64)
    predictions = np.asarray(model.predict(model_inputs(test), batch_size=8192, verbose=0)).reshape(-1)
    baseline = float(train_labels.mean())
    metrics = {
        "day": day.isoformat(),
        "test_rows": int(len(labels)),
        "rmse": rmse(np.clip(predictions, 0.5, 5.0), labels),
        "rmse_unclipped": rmse(predictions, labels),
        "baseline_rmse": rmse(np.full_like(labels, baseline), labels),
        "baseline_mean": baseline,
    }
    write_json(directory / EVALUATION, metrics)
    log.info("evaluation of %s for %s: %s", model_name, day, metrics)
    return metrics
