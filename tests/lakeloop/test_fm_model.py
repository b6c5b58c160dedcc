"""The factorization machine: bias + first-order terms + every pairwise field interaction, clipped to the rating
range, saved and loaded without custom code; its hyper-parameters come from trainer arguments."""

from __future__ import annotations

import dataclasses
from itertools import combinations

import numpy as np
import pytest

from lakeloop.features import GENRES, FeatureSpec
from lakeloop.fm_model import FMHyperParameters, build_fm_model, ranking_model, rating_model

UNCLIPPED = FeatureSpec(user_vocab_size=6, item_vocab_size=8, prior_mean=3.5, rating_min=-1e6, rating_max=1e6)
HPARAMS = FMHyperParameters(factors=4)


def sample_inputs(rows: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    genres = (rng.random((rows, len(GENRES))) < 0.2).astype(np.float32)
    genres[0] = 0.0
    return {
        "user_idx": rng.integers(0, UNCLIPPED.user_vocab_size, rows),
        "item_idx": rng.integers(0, UNCLIPPED.item_vocab_size, rows),
        "year_idx": rng.integers(0, 22, rows),
        "genres": genres,
        "user_mean_rating": rng.uniform(1, 5, rows).astype(np.float32),
        "user_rating_count": rng.integers(0, 50, rows).astype(np.float32),
        "item_mean_rating": rng.uniform(1, 5, rows).astype(np.float32),
        "item_rating_count": rng.integers(0, 50, rows).astype(np.float32),
    }


def randomised(model, seed: int = 1):
    """The model with every weight drawn at random, so that every term of the prediction matters."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.5, weight.shape).astype(np.float32) for weight in model.get_weights()])
    return model


def reference_prediction(model, x: dict[str, np.ndarray]) -> np.ndarray:
    """The FM written out with numpy: each field's factor vector and first-order term, then all pairs."""
    def weights(name):
        return model.get_layer(name).get_weights()

    vectors, first_order = [], []
    for field, column in (("user", "user_idx"), ("item", "item_idx"), ("year", "year_idx")):
        vectors.append(weights(f"{field}_factors")[0][x[column]])
        first_order.append(weights(f"{field}_weight")[0][x[column], 0])
    share = x["genres"] / np.maximum(x["genres"].sum(axis=1, keepdims=True), 1.0)
    kernel, bias = weights("genre_weight")
    vectors.append(share @ weights("genre_factors")[0])
    first_order.append(share @ kernel[:, 0] + bias[0])
    for entity in ("user", "item"):
        count = x[f"{entity}_rating_count"]
        value = ((x[f"{entity}_mean_rating"] - UNCLIPPED.prior_mean) * count / (count + 10.0))[:, None]
        vectors.append(value @ weights(f"{entity}_history_factors")[0])
        first_order.append(value[:, 0] * weights(f"{entity}_history_weight")[0][0, 0])
    pairs = sum(np.sum(first * second, axis=1) for first, second in combinations(vectors, 2))
    return sum(first_order) + pairs


def reference_selection(model, x: dict[str, np.ndarray]) -> np.ndarray:
    """The selection model written out with numpy: the item's weight plus the user's and item's factors' product."""
    user = model.get_layer("user_selection_factors").get_weights()[0][x["user_idx"]]
    item = model.get_layer("item_selection_factors").get_weights()[0][x["item_idx"]]
    return model.get_layer("item_selection_weight").get_weights()[0][x["item_idx"], 0] + np.sum(user * item, axis=1)


def test_the_prediction_is_bias_plus_first_order_terms_plus_every_pairwise_interaction():
    model = randomised(build_fm_model(UNCLIPPED, HPARAMS))
    x = sample_inputs()
    predicted = model.predict(x, verbose=0)
    np.testing.assert_allclose(predicted["rating"], reference_prediction(model, x), rtol=1e-4, atol=1e-4)
    expected = HPARAMS.rating_weight * reference_prediction(model, x) + reference_selection(model, x)
    np.testing.assert_allclose(predicted["ranking_score"], expected, rtol=1e-4, atol=1e-4)


def test_training_adds_the_selection_scores_of_sampled_items_and_the_bpr_loss():
    import keras

    from lakeloop.fm_model import fm_loss, training_model

    model = randomised(build_fm_model(UNCLIPPED, HPARAMS), seed=4)
    x = sample_inputs(rows=32)
    negatives = np.random.default_rng(5).integers(1, UNCLIPPED.item_vocab_size, (32, 3))
    outputs = keras.ops.convert_to_numpy(training_model(model, 3)({**x, "negative_items": negatives}))
    assert outputs.shape == (32, 5)
    np.testing.assert_allclose(outputs[:, 0], reference_prediction(model, x), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(outputs[:, 1], reference_selection(model, x), rtol=1e-4, atol=1e-4)
    for column in range(3):
        swapped = {**x, "item_idx": negatives[:, column]}
        np.testing.assert_allclose(outputs[:, 2 + column], reference_selection(model, swapped), rtol=1e-4, atol=1e-4)
    labels = np.full(32, 3.0, np.float32)
    bpr = np.log1p(np.exp(outputs[:, 2:] - outputs[:, 1:2])).mean(axis=1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fm_loss(0.5)(labels, outputs)),
                               (labels - outputs[:, 0]) ** 2 + 0.5 * bpr, rtol=1e-4)


def test_predictions_are_clipped_and_the_saved_model_loads_without_custom_code(tmp_path):
    import keras

    spec = dataclasses.replace(UNCLIPPED, rating_min=1.0, rating_max=5.0)
    model = randomised(build_fm_model(spec, HPARAMS), seed=2)
    x = sample_inputs(rows=256)
    predicted = model.predict(x, verbose=0)["rating"]
    assert predicted.min() == 1.0 and predicted.max() == 5.0

    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0)["rating"], predicted)


def test_hyper_parameters_come_from_trainer_arguments():
    assert FMHyperParameters.from_args({"epochs": "3", "l2": "0.001"}) == FMHyperParameters(epochs=3, l2=0.001)
    assert FMHyperParameters().as_params()["factors"] == FMHyperParameters().factors
    with pytest.raises(ValueError, match=r"unknown FM hyper-parameters \['epoch'\]"):
        FMHyperParameters.from_args({"epoch": "3"})
    assert FMHyperParameters.from_args({"user_update": "dense"}).user_update == "dense"
    with pytest.raises(ValueError, match="user_update must be one of"):
        FMHyperParameters.from_args({"user_update": "sparse"})


def test_the_ranking_model_is_the_ranking_score_and_the_rating_model_the_rating(tmp_path):
    import keras

    spec = dataclasses.replace(UNCLIPPED, rating_min=1.0, rating_max=5.0)
    randomised(build_fm_model(spec, HPARAMS), seed=3).save(tmp_path / "fm.keras")
    loaded = keras.saving.load_model(tmp_path / "fm.keras")
    inputs = sample_inputs(256)
    both = loaded.predict(inputs, verbose=0)
    np.testing.assert_allclose(rating_model(loaded).predict(inputs, verbose=0), both["rating"], rtol=1e-6)
    np.testing.assert_allclose(ranking_model(loaded).predict(inputs, verbose=0), both["ranking_score"], rtol=1e-6)


def test_a_model_saved_with_one_rating_output_ranks_by_its_score_before_the_clip():
    """Champions saved before the ranking output still rank (and rate) as they did."""
    import keras

    spec = dataclasses.replace(UNCLIPPED, rating_min=1.0, rating_max=5.0)
    fm = randomised(build_fm_model(spec, HPARAMS), seed=3)
    score = fm.output["rating"]._keras_history.operation.input
    old = keras.Model(fm.inputs, keras.ops.clip(score, 1.0, 5.0))
    inputs = sample_inputs(256)
    ratings = np.asarray(old.predict(inputs, verbose=0))
    scores = np.asarray(ranking_model(old).predict(inputs, verbose=0))
    np.testing.assert_allclose(np.clip(scores, 1.0, 5.0), ratings, rtol=1e-6)
    assert (scores > 5.0).any() and (ratings == 5.0).any() and rating_model(old) is old
    doubled = keras.Model(fm.inputs, fm.output["rating"] * 2.0)
    assert ranking_model(doubled) is doubled


def test_the_batch_size_grows_with_the_day_and_the_learning_rate_with_the_batch():
    auto = FMHyperParameters()
    assert auto.for_rows(90_000).batch_size == 256  # MovieLens 100K: 351 steps an epoch
    assert auto.for_rows(900_000).batch_size == 2048
    assert auto.for_rows(9_000_000).batch_size == 8192
    assert FMHyperParameters(batch_size=512).for_rows(9_000_000).batch_size == 512
    assert auto.for_rows(900_000).peak_learning_rate == pytest.approx(auto.learning_rate * 8 ** 0.5)


def test_the_step_budget_cuts_the_epochs_of_large_days_only():
    auto = FMHyperParameters()
    assert (auto.for_rows(90_000).epochs, auto.for_rows(900_000).epochs) == (11, 11)  # 352 and 440 steps an epoch
    large = auto.for_rows(9_000_000)  # 1,099 steps an epoch at 8,192
    assert (large.epochs, large.warm_epochs) == (5, 3)
    assert FMHyperParameters(step_budget=1_000).for_rows(9_000_000).epochs == 1
    assert FMHyperParameters(step_budget=0).for_rows(9_000_000).epochs == 11
    assert FMHyperParameters(batch_size=256, step_budget=10_000).for_rows(900_000).epochs == 3
    with pytest.raises(ValueError, match="step_budget"):
        FMHyperParameters(step_budget=-1)
    with pytest.raises(ValueError, match="batch_size must be 0"):
        FMHyperParameters(batch_size=-1)


def test_the_first_order_weights_and_the_selection_factors_take_their_own_l2():
    def l2_by_layer(hparams: FMHyperParameters) -> dict[str, float]:
        model = build_fm_model(UNCLIPPED, hparams)
        return {layer.name: float(regularizer.l2) for layer in model.layers
                if layer.name.endswith(("_weight", "_factors"))
                and (regularizer := layer.activity_regularizer or getattr(layer, "kernel_regularizer", None))}

    same, scaled = l2_by_layer(HPARAMS), l2_by_layer(dataclasses.replace(HPARAMS, first_order_l2_scale=4.0))
    selection_factors = {"user_selection_factors", "item_selection_factors"}
    first_order = {name for name in same if name.endswith("_weight") and not name.startswith("item_selection")}
    assert {"user_weight", "item_weight", "year_weight", "genre_weight", "user_history_weight"} <= first_order
    assert {same[name] for name in selection_factors} == {HPARAMS.selection_l2} != {HPARAMS.l2}
    assert {same[name] for name in set(same) - selection_factors} == {HPARAMS.l2}
    assert all(scaled[name] == pytest.approx(4.0 * HPARAMS.l2) for name in first_order)
    assert all(scaled[name] == same[name] for name in set(same) - first_order)
    assert selection_factors.isdisjoint(l2_by_layer(dataclasses.replace(HPARAMS, selection_l2=0.0)))
    assert FMHyperParameters().first_order_l2_scale == 1.0
    with pytest.raises(ValueError, match="selection_l2 must be 0 or more"):
        FMHyperParameters.from_args({"selection_l2": "-1"})
    with pytest.raises(ValueError, match="first_order_l2_scale must be 0 or more"):
        FMHyperParameters.from_args({"first_order_l2_scale": "-1"})


def test_the_rating_blend_mixes_the_autoencoders_rating_where_it_knows_user_and_item(tmp_path):
    import keras

    from lakeloop.fm_model import build_rating_blend, factorization_machine
    from lakeloop.item_autoencoder import AutoencoderTables

    spec = dataclasses.replace(UNCLIPPED, rating_min=1.0, rating_max=5.0)
    fm = randomised(build_fm_model(spec, HPARAMS), seed=4)
    rng = np.random.default_rng(5)
    codes = np.concatenate([rng.normal(0, 1, (spec.item_vocab_size, 3)), np.ones((spec.item_vocab_size, 1)),
                            (np.arange(spec.item_vocab_size) % 3 != 0)[:, None]], axis=1).astype(np.float32)
    decoder = np.concatenate([rng.normal(0, 1, (spec.user_vocab_size, 4)),
                              (np.arange(spec.user_vocab_size) != 1)[:, None]], axis=1).astype(np.float32)
    tables = AutoencoderTables(codes, decoder, seconds=0.0, train_rmse=0.0)
    blend = build_rating_blend(fm, spec, tables, weight=0.6)
    x = sample_inputs(256)
    alone, blended = fm.predict(x, verbose=0), blend.predict(x, verbose=0)

    known = codes[x["item_idx"], -1] * decoder[x["user_idx"], -1]
    autoencoder = np.clip(tables.rating(x["user_idx"], x["item_idx"]), 1.0, 5.0)
    assert 0 < known.sum() < len(known)
    expected = np.where(known > 0, 0.4 * alone["rating"] + 0.6 * autoencoder, alone["rating"])
    np.testing.assert_allclose(blended["rating"], expected, rtol=1e-5)
    np.testing.assert_array_equal(blended["ranking_score"], alone["ranking_score"])
    assert factorization_machine(blend) is fm and factorization_machine(fm) is fm

    blend.save(tmp_path / "blend.keras")
    loaded = keras.saving.load_model(tmp_path / "blend.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0)["rating"], blended["rating"], rtol=1e-6)
    np.testing.assert_allclose(ranking_model(loaded).predict(x, verbose=0), alone["ranking_score"], rtol=1e-6)
    inner = factorization_machine(loaded)
    for name in ("user_factors", "item_selection_factors"):
        np.testing.assert_array_equal(inner.get_layer(name).get_weights()[0], fm.get_layer(name).get_weights()[0])


def test_a_day_blends_the_autoencoder_only_within_its_cells_and_weight():
    spec = dataclasses.replace(UNCLIPPED, user_vocab_size=1000, item_vocab_size=2000)
    assert FMHyperParameters(autoencoder_weight=0.59).fits_autoencoder(spec)
    assert not FMHyperParameters(autoencoder_weight=0.59, autoencoder_max_cells=1_999_999).fits_autoencoder(spec)
    assert not FMHyperParameters().fits_autoencoder(spec)
    with pytest.raises(ValueError, match="autoencoder_weight must be between 0 and 1"):
        FMHyperParameters(autoencoder_weight=1.5)
