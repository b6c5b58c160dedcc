"""The contract of a day's features (their Delta tables, columns, `FeatureSpec`) and the model inputs read from them.

Shared by the features job, the trainer, evaluation and batch prediction; no Spark or TensorFlow here, so light
consumers can import it. The tables are described in docs/etl-and-features.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lakeloop.delta import partition_files, partition_summary
from lakeloop.lake import Lake, as_lake
from lakeloop.names import (  # noqa: F401 (the feature tables' names are part of this module's contract)
    EVAL,
    FEATURE_TABLES,
    FEATURES,
    ITEM_HISTORY,
    ITEM_VOCAB,
    TRAIN,
    USER_HISTORY,
    USER_RATED,
    USER_VOCAB,
)

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
RATED_COLUMN = "rated"  # USER_RATED's sorted list of the movie ids a user rated in the window


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
        """The spec as a JSON object (carried by the day's commit of the train table)."""
        return asdict(self)

    @classmethod
    def from_json(cls, payload: dict) -> FeatureSpec:
        """The spec stored by `to_json`."""
        return cls(**payload)


def feature_dataset(table: str) -> str:
    """The lake dataset (a Delta table) of one feature table: `features/train`, `features/vocab/users`..."""
    return f"{FEATURES}/{table}"


def read_feature_summary(lake: Lake | Path | str, day: date) -> dict:
    """What the features job committed for the day (counts, `spec`, the tables' versions): the summary of the day's
    commit of `features/train`, which the job commits last. FileNotFoundError naming the upstream task if none."""
    lake = as_lake(lake)
    summary = partition_summary(lake, feature_dataset(TRAIN), day)
    if summary is None:
        raise FileNotFoundError(f"{lake.uri(lake.path(feature_dataset(TRAIN)))} has no commit of {day}: "
                                f"run spark_features for {day} first")
    return summary


@dataclass(frozen=True)
class DayFeatures:
    """The day's feature tables as one features run committed them: the train commit's summary, read once, names the
    version of every table, so a reader of several tables reads one set even if a later run of the day was killed
    between its commits, or commits meanwhile."""

    lake: Lake
    day: date
    summary: dict

    @classmethod
    def of(cls, lake: Lake | Path | str, day: date) -> DayFeatures:
        """The features of `day` in `lake` (FileNotFoundError naming the upstream task if it has none)."""
        lake = as_lake(lake)
        return cls(lake, day, read_feature_summary(lake, day))

    @property
    def spec(self) -> FeatureSpec:
        """The `FeatureSpec` the day's model is built from."""
        return FeatureSpec.from_json(self.summary["spec"])

    @property
    def versions(self) -> dict[str, int]:
        """The version of each feature table that holds the day: what its readers read, and what the MLflow run
        records as the model's lineage."""
        return {**self.summary["table_versions"], TRAIN: self.summary["table_version"]}

    def files(self, table: str) -> list[str]:
        """The data files of one table of the day (paths on the lake's filesystem)."""
        if table not in self.versions:
            raise FileNotFoundError(f"the features of {self.day} in {self.lake} were committed before the table "
                                    f"{feature_dataset(table)} existed: run spark_features for {self.day} again")
        version = self.versions[table]
        files = partition_files(self.lake, feature_dataset(table), self.day, version)
        if not files:
            raise FileNotFoundError(f"{self.lake.uri(self.lake.partition(feature_dataset(table), self.day))} has no "
                                    f"committed data files in version {version}: run spark_features for {self.day} "
                                    "first")
        return files

    def read(self, table: str, columns: list[str] | None = None) -> pa.Table:
        """One table of the day — the `TRAIN` or `EVAL` examples (model inputs and label by default), a
        vocabulary... — read by the files its Delta log names, on local disk or an object store."""
        return pq.ParquetDataset(self.files(table), filesystem=self.lake.filesystem,
                                 partitioning=None).read(columns=columns or [*FEATURE_COLUMNS, LABEL])


def read_feature_spec(lake: Lake | Path, day: date) -> FeatureSpec:
    """The `FeatureSpec` of the day's features."""
    return DayFeatures.of(lake, day).spec


def read_features(lake: Lake | Path | str, day: date, table: str, columns: list[str] | None = None) -> pa.Table:
    """One table of the day's features (`DayFeatures.read`), for a reader of one table; read several through one
    `DayFeatures`."""
    return DayFeatures.of(lake, day).read(table, columns)


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
