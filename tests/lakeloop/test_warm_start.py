"""Warm start: which model a day starts from (a real MLflow registry), and how its rows reach the new model."""

from __future__ import annotations

from datetime import date

import numpy as np
import pyarrow as pa
import pytest

from lakeloop.features import FeatureSpec
from lakeloop.fm_model import FMHyperParameters, build_fm_model
from lakeloop.lake import Lake
from lakeloop.models import MODEL_FILE, ModelDirectory
from lakeloop.registry import RegistryUnavailableError, promoted_before
from lakeloop.services import free_port
from lakeloop.warm_start import NEW_ROW, WarmStart, row_map

DAY = date(2026, 11, 20)
HPARAMS = FMHyperParameters(factors=4)


def register(client, name: str, day: date, alias: str) -> str:
    version = client.create_model_version(name, source=f"file:///models/{name}/{day}", tags={
        "lakeloop.day": day.isoformat(), "lakeloop.gate.alias": alias})
    return str(version.version)


def test_a_day_starts_from_the_newest_model_promoted_on_an_earlier_day(tmp_path):
    from mlflow import MlflowClient

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=tracking)
    client.create_registered_model("fm")
    assert promoted_before("fm", DAY, tracking) is None  # nothing promoted yet: a cold start
    register(client, "fm", date(2026, 11, 16), "champion")
    wanted = register(client, "fm", date(2026, 11, 18), "champion")
    register(client, "fm", date(2026, 11, 19), "challenger")  # rejected by the gate
    register(client, "fm", DAY, "champion")  # the day itself: a rerun of it must not start from its own model
    found = promoted_before("fm", DAY, tracking)
    assert (found.version, found.day) == (wanted, date(2026, 11, 18))
    assert promoted_before("never-registered", DAY, tracking) is None


def test_a_registry_that_cannot_answer_fails_the_warm_start(monkeypatch):
    """Not knowing whether an earlier model exists is not "there is none": a cold start would silently waste the day."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    stopped = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(RegistryUnavailableError, match="could not list the versions of fm"):
        promoted_before("fm", DAY, stopped)


def test_rows_map_by_id_and_new_ids_are_new():
    before = pa.table({"user_id": ["a", "b", "c"], "user_idx": [1, 2, 3]})
    today = pa.table({"user_id": ["c", "d", "a"], "user_idx": [1, 2, 3]})
    assert row_map(today, before, "user").tolist() == [0, 3, NEW_ROW, 1]


def test_apply_carries_known_rows_and_every_shared_weight(tmp_path):
    import keras

    lake = Lake.from_url(str(tmp_path / "lake"))
    keras.utils.set_random_seed(3)
    source = build_fm_model(FeatureSpec(4, 3, 3.5, 1.0, 5.0), HPARAMS)
    for variable in source.trainable_variables:
        variable.assign(np.random.default_rng(1).normal(0, 1, variable.shape).astype("float32"))
    directory = ModelDirectory.of(lake, "fm", date(2026, 11, 19))
    with directory.local_copy() as local:
        source.save(local / MODEL_FILE)
    target = build_fm_model(FeatureSpec(5, 3, 3.5, 1.0, 5.0), HPARAMS)
    fresh = {variable.path: variable.numpy() for variable in target.trainable_variables}
    users = np.array([0, 2, NEW_ROW, 3, 1])
    start = WarmStart("7", date(2026, 11, 19), lake.url, "fm", {"user": users, "item": np.array([0, 2, 1])})
    carried = start.apply(target, FeatureSpec(5, 3, 3.5, 1.0, 5.0))
    assert carried == {"user": 4, "item": 3}
    for name in ("user_factors", "user_weight", "user_selection_factors"):
        new, old = target.get_layer(name).weights[0].numpy(), source.get_layer(name).weights[0].numpy()
        np.testing.assert_array_equal(new[[0, 1, 3, 4]], old[[0, 2, 3, 1]])
        np.testing.assert_array_equal(new[2], fresh[f"{name}/embeddings"][2])  # a new user starts fresh
    np.testing.assert_array_equal(target.get_layer("item_factors").weights[0].numpy(),
                                  source.get_layer("item_factors").weights[0].numpy()[[0, 2, 1]])
    np.testing.assert_array_equal(target.get_layer("genre_factors").weights[0].numpy(),
                                  source.get_layer("genre_factors").weights[0].numpy())
    assert start.describe(carried)["from_version"] == "7"


def saved_random_fm(lake: Lake, spec: FeatureSpec, seed: int, saved=lambda fm: fm):
    """An FM of random weights, saved (as `saved` makes it) as the model of 2026-11-19; returns the FM."""
    source = build_fm_model(spec, HPARAMS)
    for variable in source.trainable_variables:
        variable.assign(np.random.default_rng(seed).normal(0, 1, variable.shape).astype("float32"))
    with ModelDirectory.of(lake, "fm", date(2026, 11, 19)).local_copy() as local:
        saved(source).save(local / MODEL_FILE)
    return source


def test_the_rating_models_carried_factors_are_scaled_and_the_items_popularity_is_left_to_the_trainer(tmp_path):
    lake = Lake.from_url(str(tmp_path / "lake"))
    spec = FeatureSpec(4, 3, 3.5, 1.0, 5.0)
    source = saved_random_fm(lake, spec, seed=2)
    target = build_fm_model(FeatureSpec(5, 3, 3.5, 1.0, 5.0), HPARAMS)
    fresh = target.get_layer("user_factors").weights[0].numpy()
    fresh_item_selection_weight = target.get_layer("item_selection_weight").weights[0].numpy()
    start = WarmStart("7", date(2026, 11, 19), lake.url, "fm",
                      {"user": np.array([0, 2, NEW_ROW, 3, 1]), "item": np.array([0, 2, 1])})
    start.apply(target, spec, rating_factor_scale=0.25)

    def weights(model, name: str) -> np.ndarray:
        return model.get_layer(name).weights[0].numpy()

    np.testing.assert_allclose(weights(target, "user_factors")[[0, 1, 3, 4]],
                               0.25 * weights(source, "user_factors")[[0, 2, 3, 1]], rtol=1e-6)
    np.testing.assert_array_equal(weights(target, "user_factors")[2], fresh[2])  # a new user starts fresh, unscaled
    for name in ("genre_factors", "year_factors"):
        np.testing.assert_allclose(weights(target, name), 0.25 * weights(source, name), rtol=1e-6)
    np.testing.assert_array_equal(weights(target, "user_selection_factors")[[0, 1, 3, 4]],
                                  weights(source, "user_selection_factors")[[0, 2, 3, 1]])
    for name in ("item_weight", "genre_weight", "item_selection_factors"):
        np.testing.assert_array_equal(weights(target, name), weights(source, name)[[0, 2, 1]]
                                      if name.startswith("item") else weights(source, name))
    np.testing.assert_array_equal(weights(target, "item_selection_weight"), fresh_item_selection_weight)
    assert FMHyperParameters().warm_factor_scale == 0.2
    with pytest.raises(ValueError, match="warm_factor_scale must be positive"):
        FMHyperParameters(warm_factor_scale=0.0)


def test_a_model_of_another_shape_says_how_to_start_cold(tmp_path):
    lake = Lake.from_url(str(tmp_path / "lake"))
    directory = ModelDirectory.of(lake, "fm", date(2026, 11, 19))
    with directory.local_copy() as local:
        build_fm_model(FeatureSpec(4, 3, 3.5, 1.0, 5.0), HPARAMS).save(local / MODEL_FILE)
    wider = build_fm_model(FeatureSpec(4, 3, 3.5, 1.0, 5.0), FMHyperParameters(factors=8))
    start = WarmStart("7", date(2026, 11, 19), lake.url, "fm", {"user": np.arange(4), "item": np.arange(3)})
    with pytest.raises(ValueError, match="warm_start=none"):
        start.apply(wider, FeatureSpec(4, 3, 3.5, 1.0, 5.0))


def test_a_blended_champion_carries_its_fm(tmp_path):
    from lakeloop.fm_model import build_rating_blend
    from lakeloop.item_autoencoder import AutoencoderTables

    lake = Lake.from_url(str(tmp_path / "lake"))
    spec = FeatureSpec(4, 3, 3.5, 1.0, 5.0)
    tables = AutoencoderTables(np.ones((3, 4), np.float32), np.ones((4, 4), np.float32), seconds=0.0, train_rmse=0.0)
    source = saved_random_fm(lake, spec, seed=4, saved=lambda fm: build_rating_blend(fm, spec, tables, weight=0.5))
    target = build_fm_model(spec, HPARAMS)
    start = WarmStart("7", date(2026, 11, 19), lake.url, "fm", {"user": np.arange(4), "item": np.arange(3)})
    assert start.apply(target, spec) == {"user": 4, "item": 3}
    np.testing.assert_array_equal(target.get_layer("item_factors").weights[0].numpy(),
                                  source.get_layer("item_factors").weights[0].numpy())
