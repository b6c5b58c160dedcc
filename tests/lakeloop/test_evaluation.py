"""Evaluation of a day's model next to the champion and both baselines, on the same evaluation data."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pyarrow as pa
import pytest

from lakeloop.evaluation import BiasBaseline, Champion, evaluate_model, vocabulary_index
from lakeloop.features import model_inputs, read_features
from lakeloop.metrics import ranking_metrics, rmse
from lakeloop.models import EVALUATION, MODEL_FILE, REPORT_DIR, TRAIN_SUMMARY, model_dir, write_json

DAY = date(2026, 11, 20)
MODEL = "evaluation-test-fm"
REPORT_FILES = {"prediction_distribution.png", "rmse_by_user_activity.png", "training_curve.png", "report.md"}


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


def test_ranking_metrics_of_hand_ranked_lists():
    scores = np.array([[0.9, 0.8, 0.7, 0.6], [0.1, 0.2, 0.3, 0.4]])
    seen = np.array([[True, False, False, False], [False, False, False, False]])
    relevant = np.array([[False, False, True, True], [True, False, False, False]])
    metrics = ranking_metrics(scores, seen, relevant, k=2)
    # user 0: unseen ranking 1, 2, 3 → top-2 = items 1, 2, one hit at rank 2 of two relevant
    # user 1: ranking 3, 2 → no hit
    dcg_user0 = 1 / np.log2(3)
    assert metrics["precision_at_2"] == pytest.approx((1 / 2 + 0) / 2)
    assert metrics["recall_at_2"] == pytest.approx((1 / 2 + 0) / 2)
    assert metrics["ndcg_at_2"] == pytest.approx((dcg_user0 / (1 + 1 / np.log2(3)) + 0) / 2)


def test_a_user_without_relevant_items_cannot_be_ranked():
    with pytest.raises(ValueError, match="relevant"):
        ranking_metrics(np.ones((1, 3)), np.zeros((1, 3), bool), np.zeros((1, 3), bool))


def test_ids_outside_a_vocabulary_get_the_oov_index():
    vocabulary = pa.table({"user_id": ["a", "b", "c"], "user_idx": [1, 2, 3]})
    indices = vocabulary_index(pa.array(["c", "zz", "a", "c"]), vocabulary, "user_id", "user_idx")
    assert indices.tolist() == [3, 0, 1, 3]


def test_evaluation_scores_model_champion_and_baselines_on_the_same_data(feature_lake, untrained_model):
    directory = model_dir(feature_lake, MODEL, DAY)
    directory.mkdir(parents=True)
    model = untrained_model(feature_lake, seed=1)
    model.save(directory / MODEL_FILE)
    write_json(directory / TRAIN_SUMMARY, {"epoch_losses": [1.4, 1.1, 0.9]})

    metrics = evaluate_model(feature_lake, MODEL, DAY, champion=Champion("7", DAY, model))

    evaluation, train = read_features(feature_lake, DAY, "eval"), read_features(feature_lake, DAY, "train")
    labels = evaluation["label"].to_numpy().astype(np.float64)
    train_labels = train["label"].to_numpy().astype(np.float64)
    predictions = model.predict(model_inputs(evaluation), verbose=0)["rating"]
    assert metrics["eval_rows"] == evaluation.num_rows > 0
    assert metrics["rmse"] == pytest.approx(rmse(predictions, labels), rel=1e-6)
    assert metrics["mae"] == pytest.approx(np.abs(predictions - labels).mean(), rel=1e-6)
    assert metrics["baseline_mean"] == pytest.approx(train_labels.mean())
    assert metrics["baseline_rmse"] == pytest.approx(rmse(np.full_like(labels, train_labels.mean()), labels))
    bias = BiasBaseline.fit(train["user_idx"].to_numpy(), train["item_idx"].to_numpy(), train_labels)
    assert metrics["bias_baseline_rmse"] == pytest.approx(
        rmse(bias.predict(evaluation["user_idx"].to_numpy(), evaluation["item_idx"].to_numpy()), labels))
    # the champion is the same model on its own (the same) vocabularies: identical figures
    for key in ("rmse", "mae", "precision_at_10", "recall_at_10", "ndcg_at_10"):
        assert metrics[f"champion_{key}"] == pytest.approx(metrics[key], rel=1e-9), key
        assert 0 <= metrics[key] and 0 <= metrics[f"bias_baseline_{key}"]
    assert metrics["ranking_users"] > 0 and metrics["candidate_items"] > 0
    assert sum(bucket["rows"] for bucket in metrics["rmse_by_user_activity"].values()) == evaluation.num_rows
    assert metrics["gate"]["champion_version"] == "7" and metrics["gate"]["alias"] in ("champion", "challenger")
    # popularity ranks (it rates nothing); the gate weighed both trivial rankings and the champion's lists
    assert "popularity_rmse" not in metrics and 0 < metrics["popularity_ndcg_at_10"] <= 1
    assert metrics["gate"]["baseline_ndcg"] == {"popularity": metrics["popularity_ndcg_at_10"],
                                                "bias_baseline": metrics["bias_baseline_ndcg_at_10"]}
    assert metrics["gate"]["ndcg"] == metrics["ndcg_at_10"]
    assert metrics["gate"]["champion_ndcg"] == metrics["champion_ndcg_at_10"]
    assert metrics["gate"]["rule"] in ("rmse_vs_bias_baseline", "ndcg_vs_baselines", "every_rule")
    assert json.loads((directory / EVALUATION).read_text()) == metrics
    report = directory / "evaluation"
    assert {path.name for path in report.iterdir()} == REPORT_FILES
    assert all((report / name).read_bytes().startswith(b"\x89PNG") for name in
               ("prediction_distribution.png", "rmse_by_user_activity.png", "training_curve.png"))
    assert "Quality gate" in (report / "report.md").read_text()
    assert "| popularity | – | – |" in (report / "report.md").read_text()


def test_evaluation_on_an_s3_lake_equals_the_local_one(feature_lake, s3_feature_lake, untrained_model, store_model,
                                                        tmp_path):
    model_file = tmp_path / MODEL_FILE
    model = untrained_model(feature_lake, seed=2)
    model.save(model_file)
    summary = {"epoch_losses": [1.3, 1.0]}
    store_model(feature_lake, "evaluation-s3-test-fm", model_file, summary)
    remote = store_model(s3_feature_lake, "evaluation-s3-test-fm", model_file, summary)
    champion = Champion("4", DAY, model)

    local_metrics = evaluate_model(feature_lake, "evaluation-s3-test-fm", DAY, champion)
    s3_metrics = evaluate_model(s3_feature_lake, "evaluation-s3-test-fm", DAY, champion)

    assert s3_metrics == local_metrics
    assert s3_metrics["eval_rows"] > 0 and s3_metrics["gate"]["champion_version"] == "4"
    assert remote.url == f"{s3_feature_lake.url}/models/evaluation-s3-test-fm/dt={DAY}"
    assert remote.read_json(EVALUATION) == s3_metrics
    local_report = model_dir(feature_lake, "evaluation-s3-test-fm", DAY) / REPORT_DIR
    for name in REPORT_FILES:
        assert remote.files.read_bytes(f"{REPORT_DIR}/{name}") == (local_report / name).read_bytes(), name


def test_ranking_by_towers_equals_scoring_every_pair(feature_lake, fitted_model):
    """The ranking metrics' score matrix is one matrix product of the model's towers (`TowerRanker`), for the model
    and for the champion on its own vocabularies; it equals the Keras model called on every pair."""
    import keras

    from lakeloop.evaluation import RATING_COLUMNS, RankingSet, TowerRanker, keras_scorer, tower_ranker
    from lakeloop.features import read_feature_spec

    model = fitted_model(feature_lake, epochs=1)
    train = read_features(feature_lake, DAY, "train", columns=["user_id", "item_id", "user_idx", "item_idx",
                                                                "year_idx", "genres", "label"])
    ranking = RankingSet.build(train, read_features(feature_lake, DAY, "eval", columns=RATING_COLUMNS),
                               read_feature_spec(feature_lake, DAY).prior_mean, max_users=1000)
    every_pair = ranking.scores(keras_scorer(model, ranking=True))
    towers = tower_ranker(model)
    assert isinstance(towers, TowerRanker)
    by_towers = ranking.scores(towers)
    np.testing.assert_allclose(by_towers, every_pair, rtol=0, atol=1e-4)
    assert ranking_metrics(by_towers, ranking.seen, ranking.relevant) == pytest.approx(
        ranking_metrics(every_pair, ranking.seen, ranking.relevant))
    champion = Champion("7", DAY, model).ranker(feature_lake)
    assert isinstance(champion, TowerRanker)
    np.testing.assert_allclose(ranking.scores(champion), every_pair, rtol=0, atol=1e-4)

    inputs = keras.Input((), dtype="int64", name="item_idx")
    popularity_model = keras.Model(inputs, keras.layers.Embedding(10, 1, name="item_count")(inputs))
    assert tower_ranker(popularity_model) is None
