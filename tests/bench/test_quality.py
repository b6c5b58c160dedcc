"""The quality benchmark runs end to end at a tiny size: both splits through the jobs, trainer and evaluation."""

from __future__ import annotations

import math

from bench import quality
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
