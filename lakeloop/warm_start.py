"""Warm start: a day's FM starts from the newest promoted model of an earlier day, row by row where the day's
vocabularies hold the same users and items (new ones start fresh). See docs/tfspark.md (the FM trainer)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lakeloop.features import ITEM_VOCAB, USER_VOCAB, read_features
from lakeloop.fm_model import SELECTION_ITEM_WEIGHT, SELECTION_LAYERS, factorization_machine
from lakeloop.lake import Lake
from lakeloop.models import MODEL_FILE, ModelDirectory
from lakeloop.registry import promoted_before

if TYPE_CHECKING:
    import keras

    from lakeloop.features import FeatureSpec

log = logging.getLogger(__name__)
NEW_ROW = -1
VOCABULARIES = {"user": (USER_VOCAB, "user_id", "user_idx"), "item": (ITEM_VOCAB, "item_id", "item_idx")}
TABLES = {"user": ("user_factors", "user_weight", "user_selection_factors"),
          "item": ("item_factors", "item_weight", "item_selection_factors")}
# The item's selection weight holds its popularity, which moves from day to day: the trainer starts it from the day's
# counts, warm or cold (carried, five replayed days' lists lost NDCG@10 0.011 to a cold start; docs/performance.md).
NOT_CARRIED = (SELECTION_ITEM_WEIGHT,)


@dataclass(frozen=True)
class WarmStart:
    """The model a day's training starts from: its registered version and day, the lake and model name its file is
    under, and for each of this day's user and item rows the row of the same id in that model (`NEW_ROW` if it did
    not know the id)."""

    version: str
    day: date
    lake_url: str
    model_name: str
    rows: dict[str, np.ndarray]

    @classmethod
    def find(cls, lake: Lake, model_name: str, day: date, tracking_uri: str | None = None) -> WarmStart | None:
        """The newest promoted version trained before `day` with its row maps, or None (a cold start) if there is
        none. A registry that cannot answer raises; so does a registered model whose file the lake lost."""
        found = promoted_before(model_name, day, tracking_uri)
        if found is None:
            log.info("no promoted %s before %s: training from scratch", model_name, day)
            return None
        return cls.of_model(lake, model_name, found.day, day, found.version)

    @classmethod
    def of_model(cls, lake: Lake, model_name: str, model_day: date, day: date, version: str) -> WarmStart:
        """Start `day`'s training from the model `model_name` trained on `model_day` (registered as `version`), with
        its row maps; a missing model file raises."""
        directory = ModelDirectory.of(lake, model_name, model_day)
        if not directory.exists(MODEL_FILE):
            raise FileNotFoundError(
                f"{model_name} version {version} (trained on {model_day}) is the model to start from, but "
                f"{directory.url}/{MODEL_FILE} is missing; restore it, or train from scratch with the trainer "
                "argument warm_start=none")
        rows = {entity: row_map(_vocabulary(lake, day, entity), _vocabulary(lake, model_day, entity), entity)
                for entity in VOCABULARIES}
        log.info("warm start from %s version %s (trained on %s): %d of %d users and %d of %d items known", model_name,
                 version, model_day, (rows["user"] != NEW_ROW).sum(), len(rows["user"]),
                 (rows["item"] != NEW_ROW).sum(), len(rows["item"]))
        return cls(version, model_day, lake.url, model_name, rows)

    def apply(self, model: keras.Model, spec: FeatureSpec, rating_factor_scale: float = 1.0) -> dict[str, int]:
        """Copy the starting model's weights into `model`: the rows of known users and items, every other weight
        whole but `NOT_CARRIED`, the rating model's factors times `rating_factor_scale`
        (`FMHyperParameters.warm_factor_scale`); return how many user and item rows were carried over."""
        import keras

        directory = ModelDirectory.of(Lake.from_url(self.lake_url), self.model_name, self.day)
        with directory.local_copy(MODEL_FILE) as local:
            source = factorization_machine(keras.saving.load_model(local / MODEL_FILE, compile=False))
        known_layers = {layer.name: layer for layer in source.layers}
        mapped = {name: entity for entity, names in TABLES.items() for name in names}
        for layer in model.layers:
            if not layer.weights or layer.name not in known_layers or layer.name in NOT_CARRIED:
                continue  # a layer the starting model did not have starts fresh; NOT_CARRIED are the trainer's
            weights = [variable.numpy() for variable in known_layers[layer.name].weights]
            rating_factors = layer.name.endswith("_factors") and layer.name not in SELECTION_LAYERS
            scale = np.float32(rating_factor_scale if rating_factors else 1.0)
            rows_free = 1 if layer.name in mapped else 0  # a mapped table may have other rows, not other columns
            shapes = [tuple(variable.shape)[rows_free:] for variable in layer.weights], [
                value.shape[rows_free:] for value in weights]
            if shapes[0] != shapes[1]:
                raise ValueError(
                    f"{layer.name}: {self.model_name} version {self.version} has weights of shapes {shapes[1]}, this "
                    f"model {shapes[0]} (hyper-parameters changed?); train from scratch with warm_start=none")
            if layer.name in mapped:
                rows = self.rows[mapped[layer.name]]
                table = layer.weights[0].numpy()
                if len(rows) != len(table):
                    raise ValueError(f"{layer.name} has {len(table)} rows, the day's vocabulary {len(rows)}")
                known = rows != NEW_ROW
                table[known] = weights[0][rows[known]] * scale
                weights = [table]
            else:
                weights = [value * scale for value in weights]
            for variable, value in zip(layer.weights, weights, strict=True):
                variable.assign(value)
        return {entity: int((rows != NEW_ROW).sum()) for entity, rows in self.rows.items()}

    def describe(self, carried: dict[str, int]) -> dict[str, Any]:
        """What the training summary says of the warm start."""
        return {"from_version": self.version, "from_day": self.day.isoformat(),
                "users_carried": carried.get("user"), "items_carried": carried.get("item"),
                "users": len(self.rows["user"]), "items": len(self.rows["item"])}


def row_map(today: pa.Table, before: pa.Table, entity: str) -> np.ndarray:
    """For each row of `today`'s `entity` vocabulary table, the row of the same id in `before`'s (`NEW_ROW` if
    absent); the out-of-vocabulary row 0 maps to row 0."""
    _, id_column, index_column = VOCABULARIES[entity]
    size = int(pc.max(today[index_column]).as_py() or 0) + 1
    rows = np.full(size, NEW_ROW, dtype=np.int64)
    rows[0] = 0
    positions = pc.index_in(today[id_column], value_set=before[id_column].combine_chunks())
    known = positions.is_valid().to_numpy(zero_copy_only=False)
    rows[today[index_column].to_numpy()[known]] = before[index_column].combine_chunks().take(
        pc.drop_null(positions)).to_numpy()
    return rows


def _vocabulary(lake: Lake, day: date, entity: str) -> pa.Table:
    table, id_column, index_column = VOCABULARIES[entity]
    return read_features(lake, day, table, columns=[id_column, index_column])
