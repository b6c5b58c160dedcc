"""The FM trainer's fused Adam, with the model's L2 moved from the loss into it, makes the same updates as Keras'
Adam on the loss with the L2; the data loss's gradients of the embeddings stay sparse."""

from __future__ import annotations

import numpy as np

from jobs.feature_spec import GENRES, HISTORY_COLUMNS, FeatureSpec
from jobs.fm_model import FMHyperParameters, build_fm_model
from jobs.fm_trainer import fused_adam, take_weight_l2

ROWS = 64


def _train(fused: bool) -> list[np.ndarray]:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(7)
    model = build_fm_model(FeatureSpec(40, 30, 3.5, 1.0, 5.0), FMHyperParameters())
    optimizer = fused_adam(0.01, take_weight_l2(model)) if fused else keras.optimizers.Adam(0.01)
    rng = np.random.default_rng(1)
    features = {"user_idx": rng.integers(0, 40, ROWS), "item_idx": rng.integers(0, 30, ROWS),
                "year_idx": rng.integers(0, 22, ROWS), "genres": rng.random((ROWS, len(GENRES)), "float32"),
                **{column: rng.random(ROWS, "float32") for column in HISTORY_COLUMNS}}
    labels = rng.integers(1, 6, ROWS).astype("float32")

    @tf.function
    def step() -> None:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(labels - model(features, training=True)))
            if model.losses:
                loss += tf.add_n(model.losses)
        gradients = tape.gradient(loss, model.trainable_variables)
        if fused:
            sparse = {v.path for v, g in zip(model.trainable_variables, gradients, strict=True)
                      if isinstance(g, tf.IndexedSlices)}
            assert {"user_factors/embeddings", "item_factors/embeddings"} <= sparse
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))

    for _ in range(5):
        step()
    return [variable.numpy() for variable in model.trainable_variables]


def test_fused_adam_with_the_l2_updates_as_keras_adam_on_the_penalised_loss():
    ours, theirs = _train(fused=True), _train(fused=False)
    assert len(ours) == len(theirs) > 0
    for fused, reference in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(fused, reference, rtol=1e-4, atol=1e-6)
    assert any(np.abs(variable).max() > 0.02 for variable in ours)  # the steps did move the weights


def test_only_the_sparse_gradients_of_large_tables_stay_sparse():
    import keras
    import tensorflow as tf

    from jobs.fm_trainer import SPARSE_ALL_REDUCE_BYTES, dense_unless_large

    small = keras.Variable(np.zeros((10, 4), "float32"))
    large_rows = SPARSE_ALL_REDUCE_BYTES // 4 + 1
    rows = tf.IndexedSlices(tf.ones((2, 4)), tf.constant([1, 3]), tf.constant([10, 4]))
    dense = dense_unless_large(rows, small)
    assert not isinstance(dense, tf.IndexedSlices) and dense.numpy()[[1, 3]].sum() == 8.0
    big = tf.IndexedSlices(tf.ones((2, 1)), tf.constant([1, 3]), tf.constant([large_rows, 1]))
    assert isinstance(dense_unless_large(big, keras.Variable(np.zeros((large_rows, 1), "float32"))), tf.IndexedSlices)
