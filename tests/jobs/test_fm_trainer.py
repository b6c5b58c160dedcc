"""The FM trainer's fused Adam makes the same updates as Keras' Adam on the FM."""

from __future__ import annotations

import numpy as np

from jobs.feature_spec import GENRES, HISTORY_COLUMNS, FeatureSpec
from jobs.fm_model import FMHyperParameters, build_fm_model
from jobs.fm_trainer import fused_adam

ROWS = 64


def _train(optimizer) -> list[np.ndarray]:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(7)
    model = build_fm_model(FeatureSpec(40, 30, 3.5, 1.0, 5.0), FMHyperParameters())
    rng = np.random.default_rng(1)
    features = {"user_idx": rng.integers(0, 40, ROWS), "item_idx": rng.integers(0, 30, ROWS),
                "year_idx": rng.integers(0, 22, ROWS), "genres": rng.random((ROWS, len(GENRES)), "float32"),
                **{column: rng.random(ROWS, "float32") for column in HISTORY_COLUMNS}}
    labels = rng.integers(1, 6, ROWS).astype("float32")

    @tf.function
    def step() -> None:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(labels - model(features, training=True))) + tf.add_n(model.losses)
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables,
                                      strict=True))

    for _ in range(5):
        step()
    return [variable.numpy() for variable in model.trainable_variables]


def test_fused_adam_updates_as_keras_adam():
    import keras

    ours, theirs = _train(fused_adam(0.01)), _train(keras.optimizers.Adam(0.01))
    assert len(ours) == len(theirs) > 0
    for fused, reference in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(fused, reference, rtol=1e-4, atol=1e-6)
    assert any(np.abs(variable).max() > 0.02 for variable in ours)  # the steps did move the weights
