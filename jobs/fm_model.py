"""The factorization machine (Rendle, 2010) over four fields: user, item, release year and genres.

Each field has a first-order weight and a k-dimensional factor; genres, a multi-valued field, pool
their factors (mean over the movie's genres). The prediction is the global bias plus the first-order
terms plus all pairwise factor interactions, computed in O(fields·k) with the sum-of-squares identity.
Built only from Keras layers and `keras.ops`, so the saved `.keras` file loads without custom code.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from jobs.features import GENRES, ITEM_BUCKETS, USER_BUCKETS, YEAR_BUCKETS


def build_fm_model(factors: int = 16, l2: float = 1e-5, mean_rating: float = 3.5) -> keras.Model:
    """A Keras FM taking `{user_idx, item_idx, year_idx, genres}` and predicting a rating."""
    inputs = {
        "user_idx": keras.Input((), dtype="int64", name="user_idx"),
        "item_idx": keras.Input((), dtype="int64", name="item_idx"),
        "year_idx": keras.Input((), dtype="int64", name="year_idx"),
        "genres": keras.Input((len(GENRES),), dtype="float32", name="genres"),
    }
    regularizer = keras.regularizers.L2(l2)
    id_fields = [("user", "user_idx", USER_BUCKETS), ("item", "item_idx", ITEM_BUCKETS),
                 ("year", "year_idx", YEAR_BUCKETS)]
    factors_by_field, first_order = [], []
    for name, key, buckets in id_fields:
        factors_by_field.append(layers.Embedding(buckets, factors, embeddings_regularizer=regularizer,
                                                 name=f"{name}_factors")(inputs[key]))
        first_order.append(ops.squeeze(layers.Embedding(buckets, 1, embeddings_initializer="zeros",
                                                        name=f"{name}_weight")(inputs[key]), -1))
    genre_share = inputs["genres"] / ops.maximum(ops.sum(inputs["genres"], axis=-1, keepdims=True), 1.0)
    factors_by_field.append(layers.Dense(factors, use_bias=False, kernel_regularizer=regularizer,
                                         name="genre_factors")(genre_share))
    first_order.append(ops.squeeze(layers.Dense(1, kernel_initializer="zeros", name="genre_weight",
                                                bias_initializer=keras.initializers.Constant(mean_rating))
                                   (genre_share), -1))
    summed = factors_by_field[0] + factors_by_field[1] + factors_by_field[2] + factors_by_field[3]
    squares = sum(ops.square(field) for field in factors_by_field)
    interactions = 0.5 * ops.sum(ops.square(summed) - squares, axis=-1)
    prediction = ops.add(sum(first_order), interactions)
    return keras.Model(inputs, prediction, name="factorization_machine")
