"""The factorization machine (Rendle, 2010) over the feature fields of `lakeloop.features`, and its ranking
view (the score before the rating clip).

See docs/tfspark.md (the FM trainer and model).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lakeloop.features import GENRES, INDEX_COLUMNS, YEAR_BUCKETS, FeatureSpec

if TYPE_CHECKING:
    import keras


USER_UPDATES = ("lazy", "dense")


@dataclass(frozen=True)
class FMHyperParameters:
    """The FM's hyper-parameters and training schedule, logged with every run.

    `user_update`: "lazy" updates only the rows of the users a step looks up, their L2 scaled by the steps between
    their lookups (the same penalty in expectation), so a step costs the same whatever the day's users; "dense"
    applies Adam with the L2 to every row of the user tables every step, so the step grows with the users
    (README, "Performance").
    """

    factors: int = 32
    l2: float = 1e-4
    learning_rate: float = 0.002
    batch_size: int = 256
    epochs: int = 11
    seed: int = 42
    history_pseudo_count: float = 10.0
    user_update: str = "lazy"

    def __post_init__(self) -> None:
        if self.user_update not in USER_UPDATES:
            raise ValueError(f"user_update must be one of {USER_UPDATES}, got {self.user_update!r}")

    @classmethod
    def from_args(cls, args: dict[str, str]) -> FMHyperParameters:
        """Override the defaults from string arguments (trainer args); unknown names are an error."""
        types = {option.name: type(option.default) for option in dataclasses.fields(cls)}
        unknown = sorted(set(args) - set(types))
        if unknown:
            raise ValueError(f"unknown FM hyper-parameters {unknown}; known: {sorted(types)}")
        return cls(**{name: types[name](value) for name, value in args.items()})

    def as_params(self) -> dict[str, int | float | str]:
        """The hyper-parameters as a flat dict (training summary, MLflow params)."""
        return dataclasses.asdict(self)


def build_fm_model(spec: FeatureSpec, hparams: FMHyperParameters) -> keras.Model:
    """A Keras FM taking the spec's input columns and predicting a rating."""
    import keras
    from keras import layers, ops

    regularizer = keras.regularizers.L2(hparams.l2)
    inputs = {name: keras.Input((), dtype="int64", name=name) for name in INDEX_COLUMNS}
    inputs["genres"] = keras.Input((len(GENRES),), dtype="float32", name="genres")
    inputs.update({name: keras.Input((), dtype="float32", name=name) for name in spec.history_columns})
    factors, first_order = [], []

    def dense_field(name: str, values, with_bias: bool = False) -> None:
        factors.append(layers.Dense(hparams.factors, use_bias=False, kernel_regularizer=regularizer,
                                    kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                                    name=f"{name}_factors")(values))
        weight = layers.Dense(1, kernel_initializer="zeros", kernel_regularizer=regularizer, use_bias=with_bias,
                              bias_initializer=keras.initializers.Constant(spec.prior_mean), name=f"{name}_weight")
        first_order.append(ops.squeeze(weight(values), -1))

    sizes = {"user_idx": spec.user_vocab_size, "item_idx": spec.item_vocab_size, "year_idx": YEAR_BUCKETS}
    for name, size in sizes.items():
        field = name.removesuffix("_idx")
        factors.append(layers.Embedding(size, hparams.factors, embeddings_regularizer=regularizer,
                                        embeddings_initializer=keras.initializers.RandomNormal(stddev=0.01),
                                        name=f"{field}_factors")(inputs[name]))
        first_order.append(ops.squeeze(layers.Embedding(size, 1, embeddings_initializer="zeros",
                                                        embeddings_regularizer=regularizer,
                                                        name=f"{field}_weight")(inputs[name]), -1))
    genres = inputs["genres"]
    # The genre field's first-order layer carries the global bias (a Dense bias needs no custom layer).
    dense_field("genre", genres / ops.maximum(ops.sum(genres, axis=-1, keepdims=True), 1.0), with_bias=True)
    for entity in ("user", "item"):
        mean, count = f"{entity}_mean_rating", f"{entity}_rating_count"
        if mean in inputs:
            confidence = inputs[count] / (inputs[count] + hparams.history_pseudo_count)
            dense_field(f"{entity}_history", ops.expand_dims((inputs[mean] - spec.prior_mean) * confidence, -1))
    stacked = ops.stack(factors, axis=1)
    interactions = 0.5 * ops.sum(ops.square(ops.sum(stacked, axis=1)) - ops.sum(ops.square(stacked), axis=1), axis=-1)
    prediction = ops.clip(ops.add(sum(first_order), interactions), spec.rating_min, spec.rating_max)
    return keras.Model(inputs, prediction, name="factorization_machine")


def ranking_model(model: keras.Model) -> keras.Model:
    """The model's scores before its final clip to the rating range, for ranking.

    The clip gives every candidate the model rates above the top rating the same score, so a top-10 list
    would be ordered by the tie-break instead of by the model (43% of the top-10 rows of a 20k-event run were
    tied at 5.0). Ratings (RMSE, MAE) keep the clip; a model whose output is not a clip is returned as is.
    """
    import keras

    final = model.outputs[0]._keras_history.operation
    if type(final).__name__ != "Clip":
        return model
    return keras.Model(model.inputs, final.input, name=f"{model.name}_ranking")
