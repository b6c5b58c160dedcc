"""A day's user and item towers of a registered model (`lakeloop.towers`): built from the day's serving inputs,
committed to the lake as `embeddings/users/dt=D/` and `embeddings/items/dt=D/`, and named on the MLflow model version
that made them, so batch prediction ranks with them and others can use them for retrieval.

See docs/evaluation-and-registry.md (batch predictions).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from lakeloop.delta import replace_partition
from lakeloop.features import multi_hot
from lakeloop.lake import Lake, as_lake
from lakeloop.names import ITEM_EMBEDDINGS, USER_EMBEDDINGS
from lakeloop.spark_inputs import serving_item_inputs, serving_user_inputs
from lakeloop.spark_jobs import read_catalog
from lakeloop.towers import ITEM_TOWER_INPUTS, USER_TOWER_INPUTS, FMTowers, Tower, check_against_model

if TYPE_CHECKING:
    import keras
    from pyspark.sql import SparkSession

EMBEDDINGS_TAG = "lakeloop.embeddings"
EMBEDDINGS_ARTIFACTS = "embeddings"


@dataclass(frozen=True)
class DayTowers:
    """A model's towers for one day: every user of the day's window (sorted by id) and every catalog movie (sorted
    by id, so a smaller position is a smaller id), and the constant of every score."""

    constant: float
    user_ids: pa.Array
    users: Tower
    item_ids: pa.Array
    items: Tower

    @property
    def factors(self) -> int:
        """The length of a factor vector."""
        return self.users.factors.shape[1]

    def user_table(self) -> pa.Table:
        """The user tower as a table: `user_id`, `bias` (a_u), `factors` (p_u)."""
        return tower_table("user_id", self.user_ids, self.users)

    def item_table(self) -> pa.Table:
        """The item tower as a table: `item_id`, `bias` (b_i), `factors` (q_i)."""
        return tower_table("item_id", self.item_ids, self.items)


def tower_table(id_column: str, ids: pa.Array, tower: Tower) -> pa.Table:
    """Ids, biases and factor vectors as one table. The vectors are a plain list of doubles, the type a Delta table
    holds (`array<double>`): a fixed-size list would be kept in the files of the table's first commit only, every later
    commit being cast to the table's type, so one table's days would read back with two types."""
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(tower.factors.ravel(), pa.float64()), tower.factors.shape[1])
    factors = fixed.cast(pa.list_(pa.float64()))
    return pa.table({id_column: ids, "bias": pa.array(tower.bias, pa.float64()), "factors": factors})


def tower_from_table(table: pa.Table | pa.RecordBatch) -> Tower:
    """The tower held by a `tower_table` (or a batch of its rows)."""
    factors = table.column("factors")
    if isinstance(factors, pa.ChunkedArray):
        factors = factors.combine_chunks()
    values = factors.flatten().to_numpy().astype(np.float64, copy=False)
    return Tower(table.column("bias").to_numpy().astype(np.float64, copy=False), values.reshape(len(factors), -1))


def side_inputs(table: pa.Table, columns: list[str]) -> dict[str, np.ndarray]:
    """One side's model inputs as numpy arrays (the genres list column as a multi-hot matrix)."""
    return {name: multi_hot(table[name]) if pa.types.is_list(table[name].type) else table[name].to_numpy()
            for name in columns}


def build_day_towers(spark: SparkSession, lake: Lake | Path, day: date, model_day: date, towers: FMTowers,
                     model: keras.Model | None = None) -> DayTowers:
    """The day's towers of a model (trained on `model_day`'s partition, whose vocabularies it indexes) for the
    users of the day's window and the catalog, with history statistics as of the end of the window; checked against
    the Keras model itself on sample pairs when it is given (`lakeloop.towers.check_against_model`)."""
    lake = as_lake(lake)
    users = serving_user_inputs(spark, lake, day, model_day).toArrow().sort_by("user_id")
    items = serving_item_inputs(spark, lake, day, read_catalog(spark, lake), model_day).toArrow().sort_by("item_id")
    user_inputs, item_inputs = side_inputs(users, USER_TOWER_INPUTS), side_inputs(items, ITEM_TOWER_INPUTS)
    if model is not None:
        check_against_model(model, towers, user_inputs, item_inputs)
    return DayTowers(towers.constant, users["user_id"].combine_chunks(), towers.user_tower(user_inputs),
                     items["item_id"].combine_chunks(), towers.item_tower(item_inputs))


def write_embeddings(lake: Lake | Path, day: date, towers: DayTowers, manifest: dict) -> dict[str, str | int]:
    """Make the day's user and item towers the day's partitions of the Delta tables `embeddings/users` and
    `embeddings/items`, each commit carrying `manifest` (the model's name and version), the constant and the
    factors; return the tables' URLs (`users`, `items`) and the table versions committed (`users_version`,
    `items_version`)."""
    lake = as_lake(lake)
    described = {**manifest, "day": str(day), "constant": towers.constant, "factors": towers.factors,
                 "score": "constant + users.bias + items.bias + dot(users.factors, items.factors)"}
    users = replace_partition(lake, USER_EMBEDDINGS, day, towers.user_table(), described)
    items = replace_partition(lake, ITEM_EMBEDDINGS, day, towers.item_table(), described)
    return {"users": users.uri, "items": items.uri, "users_version": users.version, "items_version": items.version}


def log_embeddings(model_name: str, version: str, day: date, locations: dict[str, str | int],
                   tracking_uri: str | None = None) -> None:
    """Name the day's embedding partitions on the model version that made them: the version's tags
    `lakeloop.embeddings.{day,users,items,users_version,items_version}` point at the latest day's partitions and
    the table versions that committed them, and its run holds one `embeddings/dt=D.json` per day."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    record = {"day": str(day), "model_name": model_name, "model_version": version, **locations}
    run_id = client.get_model_version(model_name, version).run_id
    if run_id:
        client.log_dict(run_id, record, f"{EMBEDDINGS_ARTIFACTS}/dt={day}.json")
    for key, value in {"day": str(day), **locations}.items():
        client.set_model_version_tag(model_name, version, f"{EMBEDDINGS_TAG}.{key}", str(value))
