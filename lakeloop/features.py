"""The contract of a day's feature partition (layout, columns, `FeatureSpec`) and the model inputs read from it.

Shared by the features job, the trainer, evaluation and batch prediction; no Spark or TensorFlow here, so light
consumers can import it. The partition's layout is described in docs/etl-and-features.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa

from lakeloop.lake import Lake, as_lake, partition_path

FEATURES = "features"
TRAIN = "train"
EVAL = "eval"
USER_VOCAB = "_vocab/users"
ITEM_VOCAB = "_vocab/items"
USER_HISTORY = "_history/users"
ITEM_HISTORY = "_history/items"
MANIFEST = "_manifest.json"

OOV_INDEX = 0
YEAR_BUCKETS = 22
GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
          "War", "Western"]
INDEX_COLUMNS = ["user_idx", "item_idx", "year_idx"]
MULTI_HOT_COLUMNS = ["genres"]
HISTORY_COLUMNS = ["user_mean_rating", "user_rating_count", "item_mean_rating", "item_rating_count"]
FEATURE_COLUMNS = [*INDEX_COLUMNS, *MULTI_HOT_COLUMNS, *HISTORY_COLUMNS]
LABEL = "label"


@dataclass(frozen=True)
class FeatureSpec:
    """What a model needs to know about its inputs: vocabulary sizes (OOV included), the training ratings'
    mean (the prior of missing history) and range (the output clip), and which history columns it takes."""

    user_vocab_size: int
    item_vocab_size: int
    prior_mean: float
    rating_min: float
    rating_max: float
    history_columns: list[str] = field(default_factory=lambda: list(HISTORY_COLUMNS))

    def to_json(self) -> dict:
        """The spec as a JSON object (stored in the partition's manifest)."""
        return asdict(self)

    @classmethod
    def from_json(cls, payload: dict) -> FeatureSpec:
        """The spec stored by `to_json`."""
        return cls(**payload)


def feature_partition(lake: Path, day: date) -> Path:
    """The directory of day D's feature partition on a local lake (readers of a `Lake` take its manifest's files:
    `Lake.partition_files(FEATURES, day, table)`)."""
    return partition_path(lake, FEATURES, day)


def feature_table_path(lake: Path, day: date, table: str) -> Path:
    """One table of the day's feature partition on a local lake (`TRAIN`, `EVAL`, `USER_VOCAB`...); readers of any
    lake take the files its manifest names (`read_features`)."""
    return feature_partition(lake, day) / table


def read_feature_manifest(lake: Lake | Path, day: date) -> dict:
    """The manifest of the day's feature partition, naming the upstream task when it is missing."""
    lake = as_lake(lake)
    manifest = lake.read_manifest(FEATURES, day)
    if manifest is None:
        raise FileNotFoundError(f"{lake.uri(lake.partition(FEATURES, day))}/{MANIFEST} does not exist: "
                                f"run spark_features for {day} first")
    return manifest


def read_feature_spec(lake: Lake | Path, day: date) -> FeatureSpec:
    """The `FeatureSpec` of the day's feature partition."""
    return FeatureSpec.from_json(read_feature_manifest(lake, day)["spec"])


def read_features(lake: Lake | Path | str, day: date, table: str, columns: list[str] | None = None) -> pa.Table:
    """A table of the day's committed feature partition — the `TRAIN` or `EVAL` examples (model inputs and label by
    default), a vocabulary... — read by the files its manifest names, on local disk or an object store."""
    lake = as_lake(lake)
    rows = lake.read_partition(FEATURES, day, table, columns=columns or [*FEATURE_COLUMNS, LABEL])
    if rows is None:
        where = lake.uri(f"{lake.partition(FEATURES, day)}/{table}")
        raise FileNotFoundError(f"{where} has no committed data files: run spark_features for {day} first")
    return rows


def model_inputs(data: pa.Table | pa.RecordBatch) -> dict[str, np.ndarray]:
    """The FM's input dict from a feature table or batch, without per-row Python."""
    inputs = {}
    for name in FEATURE_COLUMNS:
        column = data.column(name)
        if pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type):
            inputs[name] = multi_hot(column)
        else:
            inputs[name] = column.to_numpy()
    return inputs


def multi_hot(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A list column of equal-length float lists (the genres) as a (rows, width) float32 matrix."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.flatten().to_numpy().reshape(len(column), -1).astype(np.float32)
