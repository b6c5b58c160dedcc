"""The quality benchmark runs end to end at a tiny size: both splits through the jobs, trainer and evaluation, and
the validation mode that holds out part of the random split's training ratings."""

from __future__ import annotations

import math

from bench import quality
from bench.support.movielens_lake import END_DAY
from lakeloop.features import EVAL, TRAIN, read_features
from lakeloop.movielens import MovieLens


def test_both_splits_are_trained_and_compared_with_both_baselines(spark, movielens, tmp_path):
    small = MovieLens(movielens.ratings.slice(0, 3000), movielens.movies)
    results = quality.run_quality(spark, small, tmp_path, days=2, seed=42, hparams={"epochs": "1", "factors": "4"})

    assert [result.name[:3] for result in results] == ["(a)", "(b)"]
    for result in results:
        assert result.train_rows + result.eval_rows == 3000
        assert 0.08 < result.eval_rows / 3000 < 0.12
        assert all(math.isfinite(value) and 0 < value < 4 for value in
                   (result.rmse, result.baseline_rmse, result.bias_baseline_rmse))
        assert result.ranking_users > 0
        assert all(0 <= value <= 1 for value in (result.precision_at_10, result.bias_baseline_precision_at_10,
                                                 result.ndcg_at_10, result.bias_baseline_ndcg_at_10,
                                                 result.popularity_ndcg_at_10))
    report = quality.markdown_report(results, {"epochs": 1})
    assert "(a) random 90/10, seed 42" in report and "(b) time split" in report
    assert "NDCG@10 popularity / bias / FM" in report and "above both trivial rankings" in report
    assert "target (a) RMSE ≤ 0.89" in report and "better than the user/item-bias baseline" in report


def event_ids(lake, table: str) -> set[str]:
    """The event ids of a table (train or eval) of the quality lake's feature partition."""
    return set(read_features(lake, END_DAY, table, columns=["event_id"]).column("event_id").to_pylist())


def test_validation_splits_the_random_training_ratings_and_never_sees_the_test_ratings(spark, movielens, tmp_path):
    small = MovieLens(movielens.ratings.slice(0, 5000), movielens.movies)
    result = quality.run_validation(spark, small, tmp_path, days=2, seed=42, hparams={"epochs": "1", "factors": "4"})
    quality.random_split_features(spark, tmp_path / "curated", tmp_path / "random-split", days=2, seed=42)

    test_train, test_eval = (event_ids(tmp_path / "random-split", table) for table in (TRAIN, EVAL))
    inner_train, validation = (event_ids(tmp_path / "validation-split", table) for table in (TRAIN, EVAL))
    assert len(test_train) + len(test_eval) == 5000
    assert inner_train.isdisjoint(validation)
    assert (inner_train | validation).isdisjoint(test_eval)
    assert inner_train | validation == test_train
    assert 0.08 < len(validation) / len(test_train) < 0.14
    assert (result.train_rows, result.eval_rows) == (len(inner_train), len(validation))
    assert result.name.startswith("(v)")
    assert all(math.isfinite(value) and 0 < value < 4 for value in
               (result.rmse, result.baseline_rmse, result.bias_baseline_rmse))
    assert result.ranking_users > 0 and 0 <= result.ndcg_at_10 <= 1
    report = quality.validation_report(result, {"epochs": 1})
    assert "validation" in report and "NDCG@10 popularity / bias / FM" in report and "target" not in report
