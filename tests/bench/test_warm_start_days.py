"""The warm-start benchmark replays days through the real jobs and chains each warm model on its own model of the
day before, scored beside the cold models."""

from __future__ import annotations

import math
import statistics

from bench import warm_start_days
from lakeloop.movielens import MovieLens


def test_warm_models_chain_on_their_own_previous_day_and_are_compared_with_cold_ones(spark, movielens, tmp_path):
    small = MovieLens(movielens.ratings.slice(0, 3000), movielens.movies)
    runs = warm_start_days.run_days(spark, small, tmp_path, days=3, cold_seeds=[42], scales=[0.2],
                               hparams={"epochs": "1", "warm_epochs": "1", "factors": "4"}, progress=lambda _: None)

    days = sorted({run.day for run in runs})
    assert [(run.day, run.chain, run.started_from) for run in runs] == [
        (days[0], "cold-seed42", None),
        (days[1], "cold-seed42", None), (days[1], "warm-x0.2", f"cold-seed42@{days[0]}"),
        (days[2], "cold-seed42", None), (days[2], "warm-x0.2", f"warm-x0.2@{days[1]}")]
    assert all(math.isfinite(run.rmse) and 0 <= run.ndcg_at_10 <= 1 and run.epochs == 1 for run in runs)
    assert [run.train_rows for run in runs if run.chain == "cold-seed42"] == sorted(
        {run.train_rows for run in runs})

    figures = warm_start_days.summary_figures(runs, [42], [0.2])
    warm = [run for run in runs if run.started_from]
    cold = {run.day: run for run in runs if run.chain == "cold-seed42"}
    assert figures["days"] == 3
    assert math.isclose(figures["warm"]["0.2"]["rmse_minus_cold"],
                        statistics.fmean(run.rmse - cold[run.day].rmse for run in warm))
    assert figures["cold_seed_rmse_range"] == 0
    report = "\n".join(warm_start_days.report(runs, [42], [0.2], figures))
    assert "NDCG@10 warm-x0.2" in report and "days beating bias RMSE" in report
