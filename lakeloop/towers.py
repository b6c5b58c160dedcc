"""The ranking score of `lakeloop.fm_model`'s model (the FM, and the selection model if it has one) split into a user
tower and an item tower, from its weights in numpy: the score of (u, i) is `constant + user bias + item bias +
<user factors, item factors>`, so ranking every item for every user is one matrix product. Used by batch
prediction, evaluation's ranking metrics and the scoring bench.

See docs/evaluation-and-registry.md (batch predictions).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lakeloop.features import GENRES

if TYPE_CHECKING:
    import keras

USER_FIELDS = ("user", "user_history")
ITEM_FIELDS = ("item", "year", "genre", "item_history")
EMBEDDING_FIELDS = ("user", "item", "year")
REQUIRED_FIELDS = ("user", "item", "year", "genre")
HISTORY_ENTITIES = ("user", "item")
GRAPH_OPERATIONS = {"InputLayer", "Embedding", "Dense", "Add", "Subtract", "Multiply", "TrueDivide", "Maximum", "Sum",
                    "Square", "Stack", "Squeeze", "ExpandDims", "Clip"}
USER_TOWER_INPUTS = ["user_idx", "user_mean_rating", "user_rating_count"]
ITEM_TOWER_INPUTS = ["item_idx", "year_idx", "genres", "item_mean_rating", "item_rating_count"]
EXCLUDED_SCORE = -np.inf
SELECTION_LAYERS = ("user_selection_factors", "item_selection_factors", "item_selection_weight")
TOWERS_FILE = "fm_towers.npz"


class UnknownModelError(ValueError):
    """The model is not the FM whose decomposition this module knows: scoring it by towers would be wrong."""


@dataclass(frozen=True)
class Tower:
    """One side's part of every score: a bias per row and a factor vector per row, float64."""

    bias: np.ndarray
    factors: np.ndarray

    def __len__(self) -> int:
        return len(self.bias)

    def take(self, rows: np.ndarray) -> Tower:
        """The tower of the given rows only."""
        return Tower(self.bias[rows], self.factors[rows])


@dataclass(frozen=True)
class HistoryConstants:
    """The constants the model's graph applies to an entity's history: `(mean - prior_mean) * count / (count +
    pseudo_count)` is the history field's input."""

    prior_mean: float
    pseudo_count: float

    def scalar(self, means: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """The history field's input, as the model computes it (float32)."""
        means, counts = np.asarray(means, np.float32), np.asarray(counts, np.float32)
        confidence = counts / (counts + np.float32(self.pseudo_count))
        return ((means - np.float32(self.prior_mean)) * confidence).astype(np.float64)


@dataclass(frozen=True)
class SelectionTables:
    """The selection model's tables (`lakeloop.fm_model.selection_layers`): its score b'_i + <p'_u, q'_i> is added
    to `rating_weight` × the FM's score in the ranking score."""

    user_factors: np.ndarray
    item_factors: np.ndarray
    item_weight: np.ndarray


@dataclass(frozen=True)
class FMTowers:
    """The model's weights rearranged into the two towers of its ranking score: the FM's (a model saved before the
    ranking output ranks by the FM's score before its clip) scaled by `rating_weight`, with the selection model's
    factors appended to both sides and its item weight added to the item side when the model has one."""

    global_bias: float
    embeddings: dict[str, np.ndarray]
    embedding_weights: dict[str, np.ndarray]
    genre_factors: np.ndarray
    genre_weight: np.ndarray
    history_factors: dict[str, np.ndarray]
    history_weights: dict[str, np.ndarray]
    history_constants: dict[str, HistoryConstants]
    rating_weight: float = 1.0
    selection: SelectionTables | None = None

    @classmethod
    def of(cls, model: keras.Model) -> FMTowers:
        """The towers of a model built by `lakeloop.fm_model.build_fm_model` (trained or not; its ranking view, or
        one saved before it had a selection model, or the FM inside a rating blend, whose ranking score is the FM's);
        `UnknownModelError` for any other model."""
        from lakeloop.fm_model import factorization_machine

        model = factorization_machine(model)
        layers = _known_layers(model)

        def weights(name: str) -> list[np.ndarray]:
            return [np.asarray(value, np.float64) for value in layers[name].get_weights()]

        history = [entity for entity in HISTORY_ENTITIES if f"{entity}_history_factors" in layers]
        genre_kernel, genre_bias = weights("genre_weight")
        selection = None
        if SELECTION_LAYERS[0] in layers:
            user_factors, item_factors, item_weight = (weights(name)[0] for name in SELECTION_LAYERS)
            selection = SelectionTables(user_factors, item_factors, item_weight[:, 0])
        return cls(
            global_bias=float(genre_bias[0]),
            embeddings={field: weights(f"{field}_factors")[0] for field in EMBEDDING_FIELDS},
            embedding_weights={field: weights(f"{field}_weight")[0][:, 0] for field in EMBEDDING_FIELDS},
            genre_factors=weights("genre_factors")[0],
            genre_weight=genre_kernel[:, 0],
            history_factors={entity: weights(f"{entity}_history_factors")[0][0] for entity in history},
            history_weights={entity: float(weights(f"{entity}_history_weight")[0][0, 0]) for entity in history},
            history_constants={entity: _history_constants(model, entity) for entity in history},
            rating_weight=1.0 if selection is None else _rating_weight(model),
            selection=selection,
        )

    def save(self, path: Path | str) -> None:
        """Write the towers' weights and graph constants to one `.npz` file: what ranking by towers needs, readable
        with numpy alone (batch prediction loads it instead of TensorFlow and the Keras model)."""
        arrays = {"global_bias": self.global_bias, "rating_weight": self.rating_weight,
                  "genre_factors": self.genre_factors, "genre_weight": self.genre_weight}
        for field in EMBEDDING_FIELDS:
            arrays[f"embeddings.{field}"] = self.embeddings[field]
            arrays[f"embedding_weights.{field}"] = self.embedding_weights[field]
        for entity, constants in self.history_constants.items():
            arrays[f"history_factors.{entity}"] = self.history_factors[entity]
            arrays[f"history_weights.{entity}"] = self.history_weights[entity]
            arrays[f"history_prior_mean.{entity}"] = constants.prior_mean
            arrays[f"history_pseudo_count.{entity}"] = constants.pseudo_count
        if self.selection is not None:
            arrays.update({"selection.user_factors": self.selection.user_factors,
                           "selection.item_factors": self.selection.item_factors,
                           "selection.item_weight": self.selection.item_weight})
        with open(path, "wb") as file:
            np.savez(file, **{name: np.asarray(value, np.float64) for name, value in arrays.items()})

    @classmethod
    def load(cls, path: Path | str) -> FMTowers:
        """The towers `save` wrote."""
        with np.load(path) as stored:
            arrays = dict(stored)
        history = sorted(name.split(".", 1)[1] for name in arrays if name.startswith("history_factors."))
        selection = None
        if "selection.user_factors" in arrays:
            selection = SelectionTables(arrays["selection.user_factors"], arrays["selection.item_factors"],
                                        arrays["selection.item_weight"])
        return cls(
            global_bias=float(arrays["global_bias"]),
            embeddings={field: arrays[f"embeddings.{field}"] for field in EMBEDDING_FIELDS},
            embedding_weights={field: arrays[f"embedding_weights.{field}"] for field in EMBEDDING_FIELDS},
            genre_factors=arrays["genre_factors"],
            genre_weight=arrays["genre_weight"],
            history_factors={entity: arrays[f"history_factors.{entity}"] for entity in history},
            history_weights={entity: float(arrays[f"history_weights.{entity}"]) for entity in history},
            history_constants={entity: HistoryConstants(float(arrays[f"history_prior_mean.{entity}"]),
                                                        float(arrays[f"history_pseudo_count.{entity}"]))
                               for entity in history},
            rating_weight=float(arrays["rating_weight"]),
            selection=selection,
        )

    @property
    def constant(self) -> float:
        """The part of every score that depends on neither side."""
        return self.rating_weight * self.global_bias

    @property
    def factors(self) -> int:
        """The length of a factor vector (the FM's, and the selection model's after it)."""
        return self.genre_factors.shape[1] + (0 if self.selection is None else self.selection.user_factors.shape[1])

    def user_tower(self, inputs: dict[str, np.ndarray]) -> Tower:
        """The user side (`user_idx`, and `user_mean_rating`/`user_rating_count` if the model takes them) of every
        row of `inputs`, as `model_inputs` would give them."""
        index = np.asarray(inputs["user_idx"], np.int64)
        fields = [self.embeddings["user"][index]]
        bias = self._with_history("user", inputs, fields, self.embedding_weights["user"][index])
        rating = _tower(bias, fields)
        if self.selection is None:
            return rating
        return Tower(self.rating_weight * rating.bias,
                     np.hstack([self.rating_weight * rating.factors, self.selection.user_factors[index]]))

    def item_tower(self, inputs: dict[str, np.ndarray]) -> Tower:
        """The item side (`item_idx`, `year_idx`, `genres` multi-hot, and `item_mean_rating`/`item_rating_count` if
        the model takes them) of every row of `inputs`."""
        index, year = np.asarray(inputs["item_idx"], np.int64), np.asarray(inputs["year_idx"], np.int64)
        genres = np.asarray(inputs["genres"], np.float32)
        if genres.ndim != 2 or genres.shape[1] != len(GENRES):
            raise ValueError(f"genres must be a (rows, {len(GENRES)}) multi-hot matrix, got shape {genres.shape}")
        normalised = (genres / np.maximum(genres.sum(axis=1, keepdims=True), np.float32(1.0))).astype(np.float64)
        fields = [self.embeddings["item"][index], self.embeddings["year"][year], normalised @ self.genre_factors]
        bias = (self.embedding_weights["item"][index] + self.embedding_weights["year"][year]
                + normalised @ self.genre_weight)
        bias = self._with_history("item", inputs, fields, bias)
        rating = _tower(bias, fields)
        if self.selection is None:
            return rating
        return Tower(self.rating_weight * rating.bias + self.selection.item_weight[index],
                     np.hstack([rating.factors, self.selection.item_factors[index]]))

    def _with_history(self, entity: str, inputs: dict[str, np.ndarray], fields: list, bias: np.ndarray) -> np.ndarray:
        """Add the entity's history field (if the model takes it) to `fields`; return `bias` with its weight."""
        if entity not in self.history_factors:
            return bias
        scalar = self.history_constants[entity].scalar(inputs[f"{entity}_mean_rating"],
                                                       inputs[f"{entity}_rating_count"])
        fields.append(scalar[:, None] * self.history_factors[entity])
        return bias + scalar * self.history_weights[entity]

    def scores(self, users: Tower, items: Tower) -> np.ndarray:
        """The (users, items) matrix of ranking scores: the model's score before its clip for every pair."""
        return pair_scores(self.constant, users, items)


def pair_scores(constant: float, users: Tower, items: Tower) -> np.ndarray:
    """`constant + a_u + b_i + <p_u, q_i>` for every (user, item): one matrix product."""
    scores = users.factors @ items.factors.T
    scores += users.bias[:, None]
    scores += items.bias[None, :] + constant
    return scores


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The columns of each row's k best scores, best first, ties to the smaller column, never an `EXCLUDED_SCORE`
    (-inf) one: (columns (rows, k), kept (rows, k) — False where a row has fewer than k scores left).

    A partial sort (argpartition) picks k per row; only rows whose k-th score ties with one left out are sorted
    whole, so the list is the same as a full sort by (score descending, column)."""
    rows, columns = scores.shape
    k = min(k, columns)
    if k == 0:
        return np.zeros((rows, 0), np.int64), np.zeros((rows, 0), bool)
    picked = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    picked_scores = np.take_along_axis(scores, picked, axis=1)
    kth = picked_scores.min(axis=1)
    tied_out = (scores >= kth[:, None]).sum(axis=1) > k
    for row in np.flatnonzero(tied_out):
        candidates = np.flatnonzero(scores[row] >= kth[row])
        picked[row] = candidates[np.lexsort((candidates, -scores[row, candidates]))][:k]
    picked_scores = np.take_along_axis(scores, picked, axis=1)
    order = _row_order(picked, picked_scores)
    picked = np.take_along_axis(picked, order, axis=1)
    kept = np.take_along_axis(picked_scores, order, axis=1) != EXCLUDED_SCORE
    return picked, kept


def _row_order(columns: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per row, the order sorting by score descending then column ascending."""
    rows = np.repeat(np.arange(len(columns)), columns.shape[1])
    flat = np.lexsort((columns.ravel(), -scores.ravel(), rows))
    return (flat - rows * columns.shape[1]).reshape(columns.shape)


def _tower(bias: np.ndarray, fields: list[np.ndarray]) -> Tower:
    """A side's tower from its bias and its fields' factor vectors: the factors' sum, and the bias plus every
    interaction between two fields of the side (they do not depend on the other side)."""
    total = np.sum(fields, axis=0)
    within = 0.5 * ((total * total).sum(axis=1) - sum((field * field).sum(axis=1) for field in fields))
    return Tower(np.asarray(bias + within, np.float64), total)


def _known_layers(model: Any) -> dict[str, Any]:
    """The model's weighted layers by name, if they are exactly the FM's; else `UnknownModelError`."""
    import keras

    operations = {type(operation).__name__ for operation in model.operations}
    layers = {layer.name: layer for layer in model.layers if layer.weights}
    history = [entity for entity in HISTORY_ENTITIES if f"{entity}_history_factors" in layers]
    expected = {f"{field}_{part}": keras.layers.Embedding if field in EMBEDDING_FIELDS else keras.layers.Dense
                for field in (*REQUIRED_FIELDS, *(f"{entity}_history" for entity in history))
                for part in ("factors", "weight")}
    if set(SELECTION_LAYERS) & set(layers):
        expected.update(dict.fromkeys(SELECTION_LAYERS, keras.layers.Embedding))
    problems = []
    if operations - GRAPH_OPERATIONS:
        problems.append(f"operations it does not know: {sorted(operations - GRAPH_OPERATIONS)}")
    if set(layers) != set(expected):
        problems.append(f"weighted layers {sorted(layers)}, expected {sorted(expected)}")
    else:
        wrong = sorted(name for name, kind in expected.items() if not isinstance(layers[name], kind))
        with_bias = sorted(name for name in expected if getattr(layers[name], "use_bias", False))
        if wrong:
            problems.append(f"layers of another type: {wrong}")
        if with_bias != ["genre_weight"]:
            problems.append(f"layers with a bias: {with_bias}, expected only genre_weight (the global bias)")
    if problems:
        raise UnknownModelError(
            f"model {getattr(model, 'name', '?')!r} is not the factorization machine of lakeloop.fm_model "
            f"({'; '.join(problems)}): its scores cannot be split into user and item towers. Score it pair by pair, "
            "or teach lakeloop.towers its layers")
    return layers


def _history_constants(model: Any, entity: str) -> HistoryConstants:
    """The prior mean and pseudo-count the model's graph applies to `entity`'s history inputs, read from the
    model's configuration (they are constants of the graph, not weights)."""
    constants = {}
    for layer in model.get_config()["layers"]:
        for node in layer.get("inbound_nodes") or []:
            args = node.get("args", [])
            if len(args) != 2 or not isinstance(args[1], int | float) or not isinstance(args[0], dict):
                continue
            source = args[0].get("config", {}).get("keras_history", [None])[0]
            if (layer["class_name"], source) == ("Add", f"{entity}_rating_count"):
                constants["pseudo_count"] = float(args[1])
            elif (layer["class_name"], source) == ("Subtract", f"{entity}_mean_rating"):
                constants["prior_mean"] = float(args[1])
    if set(constants) != {"prior_mean", "pseudo_count"}:
        raise UnknownModelError(
            f"model {getattr(model, 'name', '?')!r} takes {entity} history but its graph does not apply "
            f"`(mean - prior) * count / (count + pseudo_count)` to it as lakeloop.fm_model does (found {constants}): "
            "its scores cannot be split into towers")
    return HistoryConstants(**constants)


def check_against_model(model: keras.Model, towers: FMTowers, user_inputs: dict[str, np.ndarray],
                        item_inputs: dict[str, np.ndarray], pairs: int = 2048, tolerance: float = 1e-3,
                        seed: int = 0) -> float:
    """Score `pairs` random (user, item) pairs of the inputs with the Keras model's ranking view and with the
    towers; return the largest difference, or raise `UnknownModelError` if it exceeds `tolerance` (a model whose
    graph differs from the FM in a way its layers do not show)."""
    from lakeloop.fm_model import ranking_model

    rng = np.random.default_rng(seed)
    user_rows = rng.integers(0, len(user_inputs["user_idx"]), pairs)
    item_rows = rng.integers(0, len(item_inputs["item_idx"]), pairs)
    taken = {tensor.name for tensor in model.inputs}
    inputs = {**{name: np.asarray(values)[user_rows] for name, values in user_inputs.items() if name in taken},
              **{name: np.asarray(values)[item_rows] for name, values in item_inputs.items() if name in taken}}
    expected = np.asarray(ranking_model(model).predict_on_batch(inputs), np.float64).reshape(-1)
    users, items = towers.user_tower(user_inputs).take(user_rows), towers.item_tower(item_inputs).take(item_rows)
    actual = towers.constant + users.bias + items.bias + (users.factors * items.factors).sum(axis=1)
    difference = float(np.max(np.abs(actual - expected))) if pairs else 0.0
    if not difference <= tolerance:
        raise UnknownModelError(
            f"model {model.name!r}: the user and item towers score {pairs} sample pairs up to {difference:.3g} away "
            f"from the model itself (tolerance {tolerance:g}); its graph is not the FM lakeloop.towers knows. Score "
            "it pair by pair, or teach lakeloop.towers its graph")
    return difference


def _rating_weight(model: Any) -> float:
    """The constant the model's graph multiplies the FM's score by in its ranking score (`rating_weight`), read from
    its configuration: the one product of a number and a sum (`0.5 * ...` of the interactions multiplies a `Sum`)."""
    layers = model.get_config()["layers"]
    kinds = {layer["name"]: layer["class_name"] for layer in layers}
    weights = []
    for node in (node for layer in layers if layer["class_name"] == "Multiply" for node in layer["inbound_nodes"]):
        args = node.get("args", [])
        numbers = [arg for arg in args if isinstance(arg, int | float)]
        tensors = [arg.get("config", {}).get("keras_history", [None])[0] for arg in args if isinstance(arg, dict)]
        if len(numbers) == 1 and len(tensors) == 1 and kinds.get(tensors[0]) == "Add":
            weights.append(float(numbers[0]))
    if len(weights) != 1:
        raise UnknownModelError(
            f"model {getattr(model, 'name', '?')!r} has a selection model but its graph does not weigh the FM's score "
            f"by one constant as lakeloop.fm_model does (found {weights}): its scores cannot be split into towers")
    return weights[0]
