"""Offline evaluation of a day's model: RMSE on the feature partition's evaluation set, next to two baselines
fitted on its training set — the global mean, and the user/item-bias model (mean + user bias + item bias)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.feature_spec import EVAL, FEATURE_COLUMNS, LABEL, TRAIN, feature_table_path
from lakeloop.models import EVALUATION, MODEL_FILE, model_dir, write_json

log = logging.getLogger(__name__)


def read_features(lake: Path, day: date, split: str, columns: list[str] | None = None) -> pa.Table:
    """The `TRAIN` or `EVAL` examples of the day's feature partition (model inputs and label by default)."""
    path = feature_table_path(lake, day, split)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run spark_features for {day} first")
    return pq.read_table(path, columns=columns or [*FEATURE_COLUMNS, LABEL])


def model_inputs(data: pa.Table | pa.RecordBatch) -> dict[str, np.ndarray]:
    """The FM's input dict from a feature table or batch, without per-row Python."""
    inputs = {}
    for name in FEATURE_COLUMNS:
        column = data.column(name)
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        if pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type):
            inputs[name] = column.flatten().to_numpy().reshape(len(column), -1).astype(np.float32)
        else:
            inputs[name] = column.to_numpy()
    return inputs


def rmse(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Root mean squared error."""
    return float(np.sqrt(np.mean((np.asarray(predictions, np.float64) - labels) ** 2)))


@dataclass(frozen=True)
class BiasBaseline:
    """r̂(u, i) = μ + b_u + b_i, with biases fitted by regularised alternating least squares (as Surprise's
    BaselineOnly); an index without training ratings (the OOV index 0) has bias 0."""

    mean: float
    user_bias: np.ndarray
    item_bias: np.ndarray

    @classmethod
    def fit(cls, users: np.ndarray, items: np.ndarray, labels: np.ndarray, user_reg: float = 15.0,
            item_reg: float = 10.0, iterations: int = 10) -> BiasBaseline:
        """Fit on training (user index, item index, rating) arrays."""
        mean = float(labels.mean())
        user_bias, item_bias = np.zeros(users.max() + 1), np.zeros(items.max() + 1)
        user_rows = np.bincount(users, minlength=len(user_bias))
        item_rows = np.bincount(items, minlength=len(item_bias))
        def shrunk_mean(index: np.ndarray, residuals: np.ndarray, rows: np.ndarray, reg: float) -> np.ndarray:
            sums = np.bincount(index, residuals, len(rows))
            return np.divide(sums, reg + rows, out=np.zeros(len(rows)), where=reg + rows > 0)

        for _ in range(iterations):
            item_bias = shrunk_mean(items, labels - mean - user_bias[users], item_rows, item_reg)
            user_bias = shrunk_mean(users, labels - mean - item_bias[items], user_rows, user_reg)
        return cls(mean, user_bias, item_bias)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predicted ratings for (user index, item index) arrays of the training vocabularies."""
        return self.mean + self.user_bias[users] + self.item_bias[items]


def baseline_metrics(train: pa.Table, evaluation: pa.Table) -> dict:
    """RMSE of the global-mean and the user/item-bias baselines, fitted on `train`, on `evaluation`."""
    labels = evaluation[LABEL].to_numpy().astype(np.float64)
    train_labels = train[LABEL].to_numpy().astype(np.float64)
    bias = BiasBaseline.fit(train["user_idx"].to_numpy(), train["item_idx"].to_numpy(), train_labels)
    return {
        "baseline_mean": float(train_labels.mean()),
        "baseline_rmse": rmse(np.full_like(labels, train_labels.mean()), labels),
        "bias_baseline_rmse": rmse(bias.predict(evaluation["user_idx"].to_numpy(),
                                                evaluation["item_idx"].to_numpy()), labels),
    }


def evaluate_model(lake: Path, model_name: str, day: date) -> dict:
    """Score the day's trained model on the partition's evaluation set; write and return the metrics."""
    import keras

    directory = model_dir(lake, model_name, day)
    model = keras.saving.load_model(directory / MODEL_FILE)
    evaluation = read_features(lake, day, EVAL)
    train = read_features(lake, day, TRAIN, columns=["user_idx", "item_idx", LABEL])
    labels = evaluation[LABEL].to_numpy().astype(np.float64)
    predictions = np.asarray(model.predict(model_inputs(evaluation), batch_size=8192, verbose=0)).reshape(-1)
    metrics = {
        "day": day.isoformat(),
        "eval_rows": int(len(labels)),
        "rmse": rmse(predictions, labels),
        **baseline_metrics(train, evaluation),
    }
    write_json(directory / EVALUATION, metrics)
    log.info("evaluation of %s for %s: %s", model_name, day, metrics)
    return metrics
