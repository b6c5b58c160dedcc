"""The FM trainer's fused Adam, with the model's L2 moved from the loss into it, makes the same updates as Keras'
Adam on the loss with the L2; the data loss's gradients of the embeddings stay sparse; lazily updated user tables
get Adam's update on the rows a step looks up and keep the others; the learning rate warms up, then stays or
decays."""

from __future__ import annotations

import numpy as np
import pytest

from lakeloop.features import GENRES, HISTORY_COLUMNS, FeatureSpec
from lakeloop.fm_model import FMHyperParameters, build_fm_model
from lakeloop.fm_trainer import (
    TAIL_DECAY_FRACTION,
    USER_TABLES,
    fused_adam,
    lazy_tables,
    take_weight_l2,
    training_recipe,
    warmup_schedule,
)

ROWS = 64
USERS = 40


def _train(fused: bool, lazy_users: bool = False, steps: int = 5,
           looked_up_users: int = USERS) -> tuple[list[np.ndarray], dict]:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(7)
    model = build_fm_model(FeatureSpec(USERS, 30, 3.5, 1.0, 5.0), FMHyperParameters())
    if fused:
        lazy_paths = lazy_tables(model, USER_TABLES) if lazy_users else set()
        optimizer = fused_adam(0.01, take_weight_l2(model),
                               [variable.path in lazy_paths for variable in model.trainable_variables])
    else:
        optimizer = keras.optimizers.Adam(0.01)
    initial = {variable.path: variable.numpy() for variable in model.trainable_variables}
    rng = np.random.default_rng(1)
    features = {"user_idx": rng.integers(0, looked_up_users, ROWS), "item_idx": rng.integers(0, 30, ROWS),
                "year_idx": rng.integers(0, 22, ROWS), "genres": rng.random((ROWS, len(GENRES)), "float32"),
                **{column: rng.random(ROWS, "float32") for column in HISTORY_COLUMNS}}
    labels = rng.integers(1, 6, ROWS).astype("float32")

    @tf.function
    def step() -> None:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(labels - model(features, training=True)["rating"]))
            if model.losses:
                loss += tf.add_n(model.losses)
        gradients = tape.gradient(loss, model.trainable_variables)
        if fused:
            sparse = {v.path for v, g in zip(model.trainable_variables, gradients, strict=True)
                      if isinstance(g, tf.IndexedSlices)}
            assert {"user_factors/embeddings", "item_factors/embeddings"} <= sparse
        else:  # Keras' Adam treats sparse gradients its own way; the reference is Adam on the dense gradient
            gradients = [tf.convert_to_tensor(gradient) for gradient in gradients]
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))

    for _ in range(steps):
        step()
    return [variable.numpy() for variable in model.trainable_variables], {"initial": initial, "features": features,
                                                                         "labels": labels, "model": model}


def test_fused_adam_with_the_l2_updates_as_keras_adam_on_the_penalised_loss():
    (ours, _), (theirs, _) = _train(fused=True), _train(fused=False)
    assert len(ours) == len(theirs) > 0
    for fused, reference in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(fused, reference, rtol=1e-4, atol=1e-6)
    assert any(np.abs(variable).max() > 0.02 for variable in ours)  # the steps did move the weights


def test_only_the_sparse_gradients_of_large_tables_stay_sparse():
    import keras
    import tensorflow as tf

    from lakeloop.fm_trainer import SPARSE_ALL_REDUCE_BYTES, looked_up_rows, summable_gradient

    small = keras.Variable(np.zeros((10, 4), "float32"))
    large_rows = SPARSE_ALL_REDUCE_BYTES // 4 + 1
    rows = tf.IndexedSlices(tf.ones((2, 4)), tf.constant([1, 3]), tf.constant([10, 4]))
    dense = summable_gradient(rows, small)
    assert not isinstance(dense, tf.IndexedSlices) and dense.numpy()[[1, 3]].sum() == 8.0
    twice = tf.IndexedSlices(tf.ones((3, 4)), tf.constant([1, 3, 3]), tf.constant([10, 4]))
    slots = summable_gradient(twice, small, lazy=True).numpy()
    assert slots.shape == (3, 5) and list(slots[:, -1]) == [2, 4, 4]  # one worker: its own slots, row + 1
    rows = looked_up_rows(tf.constant(np.concatenate([slots, np.zeros((2, 5), "float32")])))
    assert list(rows.indices.numpy()) == [1, 3, 3] and rows.values.numpy().tolist() == [[1.0] * 4] * 3
    big = tf.IndexedSlices(tf.ones((2, 1)), tf.constant([1, 3]), tf.constant([large_rows, 1]))
    assert isinstance(summable_gradient(big, keras.Variable(np.zeros((large_rows, 1), "float32"))), tf.IndexedSlices)


def test_lazy_user_tables_update_the_looked_up_rows_with_adam_and_keep_the_others():
    import keras
    import tensorflow as tf

    (weights, run) = _train(fused=True, lazy_users=True, steps=1, looked_up_users=USERS // 2)
    model, initial = run["model"], run["initial"]
    by_path = dict(zip((variable.path for variable in model.trainable_variables), weights, strict=True))
    looked_up = np.unique(run["features"]["user_idx"])
    untouched = np.setdiff1d(np.arange(USERS), looked_up)
    assert len(untouched) >= USERS // 2
    fresh = build_fm_model(FeatureSpec(USERS, 30, 3.5, 1.0, 5.0), FMHyperParameters())
    for variable in fresh.trainable_variables:
        variable.assign(initial[variable.path])
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(run["labels"] - fresh(run["features"], training=True)["rating"]))
        loss += tf.add_n(fresh.losses)  # the per-example L2 of the rows looked up
    gradients = dict(zip((v.path for v in fresh.trainable_variables),
                         tape.gradient(loss, fresh.trainable_variables), strict=True))
    for table in ("user_factors/embeddings", "user_weight/embeddings"):
        before, after = initial[table], by_path[table]
        np.testing.assert_array_equal(after[untouched], before[untouched])
        gradient = tf.convert_to_tensor(gradients[table]).numpy()[looked_up]
        # Adam's first step from zero moments: lr · g / (|g| + epsilon / sqrt(1 - beta_2)).
        optimizer = keras.optimizers.Adam()
        floor = optimizer.epsilon / np.sqrt(1 - optimizer.beta_2)
        expected = before[looked_up] - 0.01 * gradient / (np.abs(gradient) + floor)
        np.testing.assert_allclose(after[looked_up], expected, rtol=1e-4, atol=1e-6)
    # the L2 is per example, so a dense step leaves unseen rows as they were too: one step updates the same
    dense_weights, _ = _train(fused=True, lazy_users=False, steps=1, looked_up_users=USERS // 2)
    for lazy, dense in zip(weights, dense_weights, strict=True):
        np.testing.assert_allclose(lazy, dense, rtol=1e-5, atol=1e-7)


def test_lazy_tables_names_only_embedding_layers_of_the_model():
    import pytest

    model = build_fm_model(FeatureSpec(USERS, 30, 3.5, 1.0, 5.0), FMHyperParameters())
    with pytest.raises(ValueError, match="no layers"):
        lazy_tables(model, ("users",))
    with pytest.raises(ValueError, match="only Embedding"):
        lazy_tables(model, ("genre_factors",))
    assert lazy_tables(model, USER_TABLES) == {"user_factors/embeddings", "user_weight/embeddings",
                                               "user_selection_factors/embeddings"}


def test_lazy_tables_summed_as_slots_update_as_when_summed_sparse(monkeypatch):
    import lakeloop.fm_trainer

    summed_dense, _ = _train(fused=True, lazy_users=True, steps=3, looked_up_users=USERS // 2)
    monkeypatch.setattr(lakeloop.fm_trainer, "EXACT_FLOAT32_INTEGERS", 0)
    summed_sparse, _ = _train(fused=True, lazy_users=True, steps=3, looked_up_users=USERS // 2)
    for dense, sparse in zip(summed_dense, summed_sparse, strict=True):
        np.testing.assert_allclose(dense, sparse, rtol=1e-6, atol=1e-7)


def test_the_selection_model_starts_from_the_items_popularity(spark):
    from lakeloop.fm_trainer import popularity_prior, rows_per_index

    examples = spark.createDataFrame([(3,), (1,), (3,), (3,), (2,)], "item_idx long")
    counts = rows_per_index(examples, "item_idx", 5)
    assert counts.tolist() == [0, 1, 1, 3, 0]
    prior = popularity_prior(counts)
    assert prior.shape == (5, 1) and abs(prior[1:].mean()) < 1e-6
    assert prior[3, 0] > prior[1, 0] == prior[2, 0] > prior[4, 0]  # ranked as popularity ranks


def test_the_learning_rate_warms_up_then_stays_or_decays_to_zero_by_the_last_step():
    peak, warmup, total = 0.01, 10, 110
    constant = warmup_schedule(peak, warmup)
    cosine = warmup_schedule(peak, warmup, "cosine", total)
    rates = {name: [float(schedule(step)) for step in range(total)]
             for name, schedule in (("none", constant), ("cosine", cosine))}
    for name in rates:
        assert rates[name][0] == pytest.approx(peak / warmup)
        assert rates[name][warmup - 1] == pytest.approx(peak)
    assert rates["none"][warmup:] == pytest.approx([peak] * (total - warmup))
    assert rates["cosine"][warmup + 49] == pytest.approx(peak / 2, rel=1e-5)
    assert rates["cosine"][-1] == pytest.approx(0.0, abs=1e-9)
    assert all(later <= earlier for earlier, later in zip(rates["cosine"][warmup:], rates["cosine"][warmup + 1:],
                                                          strict=False))
    assert cosine.get_config() == {"peak": peak, "warmup_steps": warmup, "decay": "cosine", "total_steps": total}
    tail = [float(warmup_schedule(peak, warmup, "tail", total)(step)) for step in range(total)]
    tail_start = total - round(total * TAIL_DECAY_FRACTION)
    assert tail[:tail_start + 1] == pytest.approx(rates["none"][:tail_start + 1])
    assert tail[-1] == pytest.approx(peak / (total * TAIL_DECAY_FRACTION))
    assert all(later < earlier for earlier, later in zip(tail[tail_start:], tail[tail_start + 1:], strict=False))


def test_a_decaying_learning_rate_needs_the_run_s_steps_and_a_known_decay():
    spec = FeatureSpec(USERS, 30, 3.5, 1.0, 5.0)
    with pytest.raises(ValueError, match="learning_rate_decay must be one of"):
        FMHyperParameters.from_args({"learning_rate_decay": "step"})
    with pytest.raises(ValueError, match="needs the run's total steps"):
        training_recipe(spec, FMHyperParameters(batch_size=64, learning_rate_decay="cosine"))
    hparams = FMHyperParameters(batch_size=64, learning_rate_decay="cosine")
    optimizer = training_recipe(spec, hparams, total_steps=500).optimizer
    optimizer.iterations.assign(499)
    assert float(optimizer.learning_rate) == pytest.approx(0.0, abs=1e-9)
    optimizer = training_recipe(spec, FMHyperParameters(batch_size=64, learning_rate_decay="none"),
                                total_steps=500).optimizer
    optimizer.iterations.assign(499)
    assert float(optimizer.learning_rate) == pytest.approx(hparams.peak_learning_rate)
    assert FMHyperParameters().learning_rate_decay == "tail"


def test_an_autoencoder_weight_saves_the_fm_blended_with_the_days_autoencoder(spark, feature_lake, tmp_path):
    from datetime import date

    import keras

    from bench.support.fm_training import train_in_process
    from lakeloop.features import read_feature_summary
    from lakeloop.fm_model import FM_NAME, factorization_machine
    from lakeloop.fm_trainer import FMTrainer

    day = date(2026, 11, 20)
    args = {"lake": str(feature_lake), "day": day.isoformat(), "epochs": "1", "factors": "4",
            "autoencoder_weight": "0.59", "autoencoder_units": "8", "autoencoder_epochs": "3"}
    blended = FMTrainer(**args)
    summary = train_in_process(blended, blended.pre_train(spark).toArrow(), tmp_path / "blend")
    model = keras.saving.load_model(tmp_path / "blend" / "model.keras")
    assert model.name == f"{FM_NAME}_blend" and factorization_machine(model).name == FM_NAME
    assert summary["autoencoder"]["ratings"] == read_feature_summary(feature_lake, day)["train_rows"]
    assert summary["autoencoder"]["weight"] == 0.59

    alone = FMTrainer(**args, autoencoder_max_cells="1")
    summary = train_in_process(alone, alone.pre_train(spark).toArrow(), tmp_path / "alone")
    assert summary["autoencoder"] is None
    assert keras.saving.load_model(tmp_path / "alone" / "model.keras").name == FM_NAME
