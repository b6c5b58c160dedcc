"""Evaluation of a day's model on the feature partition's evaluation set, next to both baselines."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pytest

from lakeloop.evaluation import BiasBaseline, evaluate_model, model_inputs, read_features, rmse
from lakeloop.models import EVALUATION, MODEL_FILE, model_dir

DAY = date(2026, 11, 20)
MODEL = "evaluation-test-fm"


def test_the_bias_baseline_recovers_user_and_item_biases():
    users, items = np.meshgrid(np.arange(1, 5), np.arange(1, 7), indexing="ij")
    users, items = users.ravel(), items.ravel()
    user_bias, item_bias = np.array([0, 0.5, -0.5, 1.0, -1.0]), np.array([0, 0.2, -0.2, 0.4, -0.4, 0.1, -0.1])
    labels = 3.5 + user_bias[users] + item_bias[items]
    baseline = BiasBaseline.fit(users, items, labels, user_reg=0.0, item_reg=0.0, iterations=20)
    np.testing.assert_allclose(baseline.predict(users, items), labels, atol=1e-9)
    assert baseline.predict(np.array([0]), np.array([0]))[0] == pytest.approx(3.5)

    shrunk = BiasBaseline.fit(users, items, labels)
    assert 0 < abs(shrunk.user_bias[3]) < 1.0


def test_evaluation_scores_the_eval_set_against_both_baselines(feature_lake, untrained_model):
    directory = model_dir(feature_lake, MODEL, DAY)
    directory.mkdir(parents=True)
    model = untrained_model(feature_lake, seed=1)
    model.save(directory / MODEL_FILE)

    metrics = evaluate_model(feature_lake, MODEL, DAY)

    evaluation, train = read_features(feature_lake, DAY, "eval"), read_features(feature_lake, DAY, "train")
    labels = evaluation["label"].to_numpy().astype(np.float64)
    train_labels = train["label"].to_numpy().astype(np.float64)
    predictions = np.asarray(model.predict(model_inputs(evaluation), verbose=0)).reshape(-1)
    assert metrics["eval_rows"] == evaluation.num_rows > 0
    assert metrics["rmse"] == pytest.approx(rmse(predictions, labels), rel=1e-6)
    assert metrics["baseline_mean"] == pytest.approx(train_labels.mean())
    assert metrics["baseline_rmse"] == pytest.approx(rmse(np.full_like(labels, train_labels.mean()), labels))
    bias = BiasBaseline.fit(train["user_idx"].to_numpy(), train["item_idx"].to_numpy(), train_labels)
    assert metrics["bias_baseline_rmse"] == pytest.approx(
        rmse(bias.predict(evaluation["user_idx"].to_numpy(), evaluation["item_idx"].to_numpy()), labels))
    assert json.loads((directory / EVALUATION).read_text()) == metrics
