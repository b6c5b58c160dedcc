"""The FM as a user tower and an item tower: for every (user, movie) pair of a small day the towers' score equals the
Keras model's ranking score; top-k by partial sort equals a full sort; models of another shape are refused."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from lakeloop.features import GENRES, model_inputs, multi_hot, read_feature_spec
from lakeloop.fm_model import FMHyperParameters, build_fm_model, ranking_model, rating_model
from lakeloop.lake import as_lake
from lakeloop.spark_inputs import serving_item_inputs, serving_user_inputs
from lakeloop.spark_jobs import read_catalog
from lakeloop.towers import EXCLUDED_SCORE, FMTowers, UnknownModelError, top_k

DAY = date(2026, 11, 20)
SCORE_TOLERANCE = 1e-4


def every_pair_inputs(spark, lake) -> tuple[dict, dict, dict]:
    """The user inputs of the day's users, the item inputs of every catalog movie, and the model inputs of every
    (user, movie) pair in user-major order, all built by Spark as batch prediction builds them."""
    users = serving_user_inputs(spark, lake, DAY).orderBy("user_id").toArrow()
    items = serving_item_inputs(spark, lake, DAY, read_catalog(spark, as_lake(lake))).orderBy("item_id").toArrow()
    user_inputs = {name: users[name].to_numpy() for name in ("user_idx", "user_mean_rating", "user_rating_count")}
    item_inputs = {name: items[name].to_numpy() for name in ("item_idx", "year_idx", "item_mean_rating",
                                                             "item_rating_count")}
    item_inputs["genres"] = multi_hot(items["genres"])
    user_rows, item_rows = np.repeat(np.arange(users.num_rows), items.num_rows), np.tile(np.arange(items.num_rows),
                                                                                        users.num_rows)
    pairs = {**{name: values[user_rows] for name, values in user_inputs.items()},
             **{name: values[item_rows] for name, values in item_inputs.items()}}
    return user_inputs, item_inputs, pairs


def randomised(model, seed: int):
    """`model` with every weight drawn at random (large enough that every term of the score matters)."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.5, weight.shape).astype(np.float32) for weight in model.get_weights()])
    return model


@pytest.mark.slow
def test_the_towers_give_the_models_ranking_score_for_every_pair_of_the_day(spark, feature_lake, fitted_model,
                                                                            tmp_path):
    user_inputs, item_inputs, pairs = every_pair_inputs(spark, feature_lake)
    spec = read_feature_spec(feature_lake, DAY)
    random_weights = randomised(build_fm_model(spec, FMHyperParameters(factors=8, history_pseudo_count=3.0,
                                                                         rating_weight=0.3)), seed=5)
    models = {
        "fitted": fitted_model(feature_lake, epochs=2),
        "random weights, pseudo-count 3, 8 factors, rating weight 0.3": random_weights,
        "without history": randomised(build_fm_model(
            type(spec)(**{**spec.to_json(), "history_columns": []}), FMHyperParameters(factors=4)), seed=6),
        "saved before the selection model (one output, the clipped rating)": rating_model(random_weights),
    }
    users, items = len(user_inputs["user_idx"]), len(item_inputs["item_idx"])
    assert users >= 10 and items == 1682 and (user_inputs["user_idx"] == 0).sum() < users
    for name, model in models.items():
        taken = {tensor.name for tensor in model.inputs}
        expected = np.asarray(ranking_model(model).predict({key: value for key, value in pairs.items() if key in taken},
                                                           batch_size=65_536, verbose=0), np.float64)
        towers = FMTowers.of(model)
        scores = towers.scores(towers.user_tower(user_inputs), towers.item_tower(item_inputs))
        assert scores.shape == (users, items), name
        np.testing.assert_allclose(scores.ravel(), expected.reshape(-1), rtol=0, atol=SCORE_TOLERANCE, err_msg=name)
        assert np.std(expected) > 0.01, name
        towers.save(tmp_path / "towers.npz")
        reloaded = FMTowers.load(tmp_path / "towers.npz")
        rescored = reloaded.scores(reloaded.user_tower(user_inputs), reloaded.item_tower(item_inputs))
        np.testing.assert_array_equal(rescored, scores, err_msg=f"{name}, saved and loaded")
    with_selection, before_it = FMTowers.of(random_weights), FMTowers.of(models[next(reversed(models))])
    assert with_selection.rating_weight == pytest.approx(0.3) and with_selection.factors == 16
    assert before_it.selection is None and before_it.rating_weight == 1.0 and before_it.factors == 8


def test_the_towers_of_a_model_trained_on_a_feature_table(feature_lake, fitted_model):
    """Rows as the evaluation reads them (`model_inputs` of the day's evaluation examples) score the same."""
    from lakeloop.features import EVAL, read_features

    model = fitted_model(feature_lake, epochs=1)
    inputs = model_inputs(read_features(feature_lake, DAY, EVAL))
    towers = FMTowers.of(model)
    users, items = towers.user_tower(inputs), towers.item_tower(inputs)
    per_row = towers.constant + users.bias + items.bias + (users.factors * items.factors).sum(axis=1)
    expected = np.asarray(ranking_model(model).predict(inputs, verbose=0), np.float64).reshape(-1)
    np.testing.assert_allclose(per_row, expected, rtol=0, atol=SCORE_TOLERANCE)


def test_a_model_of_another_shape_is_refused_with_what_differs():
    import keras

    inputs = {name: keras.Input((), dtype="int64", name=name) for name in ("user_idx", "item_idx")}
    users = keras.layers.Embedding(10, 4, name="user_factors")(inputs["user_idx"])
    items = keras.layers.Embedding(10, 4, name="item_factors")(inputs["item_idx"])
    two_towers = keras.Model(inputs, keras.ops.sum(users * items, axis=-1), name="dot_product")
    with pytest.raises(UnknownModelError, match="dot_product.*weighted layers.*cannot be split"):
        FMTowers.of(two_towers)

    spec_model = build_fm_model(read_spec_like(), FMHyperParameters(factors=4))
    extra = keras.layers.Dense(1, name="calibration")(keras.ops.expand_dims(spec_model.outputs[0], -1))
    with pytest.raises(UnknownModelError, match="calibration"):
        FMTowers.of(keras.Model(spec_model.inputs, extra))


def read_spec_like():
    """A feature spec for models that are built but never fed."""
    from lakeloop.features import FeatureSpec

    return FeatureSpec(user_vocab_size=10, item_vocab_size=10, prior_mean=3.5, rating_min=1.0, rating_max=5.0)


def test_top_k_by_partial_sort_equals_a_full_sort_with_ties_to_the_smaller_column():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 6, (400, 40)).astype(np.float64)  # many ties, also at the k-th place
    scores[rng.random(scores.shape) < 0.3] = EXCLUDED_SCORE
    scores[7, :] = EXCLUDED_SCORE
    scores[8, 3:] = EXCLUDED_SCORE
    columns, kept = top_k(scores, 10)
    for row in range(len(scores)):
        allowed = np.flatnonzero(scores[row] != EXCLUDED_SCORE)
        expected = allowed[np.lexsort((allowed, -scores[row, allowed]))][:10]
        assert columns[row][kept[row]].tolist() == expected.tolist(), row
    assert not kept[7].any() and kept[8].sum() == 3


def test_genres_of_the_wrong_width_are_refused(feature_lake, untrained_model):
    towers = FMTowers.of(untrained_model(feature_lake, seed=1))
    with pytest.raises(ValueError, match=f"{len(GENRES)}"):
        towers.item_tower({"item_idx": np.array([1]), "year_idx": np.array([1]), "genres": np.ones((1, 3)),
                           "item_mean_rating": np.array([4.0]), "item_rating_count": np.array([2.0])})


def test_a_rating_blend_is_split_into_the_towers_of_its_fm():
    from lakeloop.fm_model import build_rating_blend
    from lakeloop.item_autoencoder import AutoencoderTables

    spec = read_spec_like()
    fm = randomised(build_fm_model(spec, FMHyperParameters(factors=4)), seed=6)
    rng = np.random.default_rng(7)
    codes, decoder = (rng.normal(0, 1, (10, 5)).astype(np.float32) for _ in range(2))
    tables = AutoencoderTables(codes, decoder, seconds=0.0, train_rmse=0.0)
    blend = build_rating_blend(fm, spec, tables, weight=0.5)
    inputs = {"user_idx": np.arange(10), "item_idx": np.arange(10)[::-1], "year_idx": np.arange(10) % 22,
              "genres": (rng.random((10, len(GENRES))) < 0.3).astype(np.float32),
              **{name: rng.uniform(1, 40, 10).astype(np.float32) for name in
                 ("user_mean_rating", "user_rating_count", "item_mean_rating", "item_rating_count")}}
    towers, fm_towers = FMTowers.of(blend), FMTowers.of(fm)
    for side in ("user_tower", "item_tower"):
        np.testing.assert_array_equal(getattr(towers, side)(inputs).factors, getattr(fm_towers, side)(inputs).factors)
    users, items = towers.user_tower(inputs), towers.item_tower(inputs)
    per_row = towers.constant + users.bias + items.bias + (users.factors * items.factors).sum(axis=1)
    expected = np.asarray(ranking_model(blend).predict(inputs, verbose=0), np.float64).reshape(-1)
    np.testing.assert_allclose(per_row, expected, rtol=0, atol=SCORE_TOLERANCE)
