"""The batch-scoring benchmark runs end to end at a tiny size: the job, its ranking stage, the one-process limit and
the exhaustive job score the same candidate pairs, the job's lists are the exhaustive job's, and the last line is the
figures as JSON; the list check catches a wrong list."""

from __future__ import annotations

import json
import os
from datetime import date

import numpy as np
import pyarrow as pa
import pytest

from bench import scoring
from lakeloop.towers import Tower

DAY = date(2026, 11, 20)


@pytest.mark.slow
def test_the_job_the_limit_and_the_exhaustive_job_rank_the_same_pairs(spark, feature_lake, tmp_path, capsys):
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI")
    results = scoring.main(["--quick", "--features-from", str(feature_lake), "--day", DAY.isoformat(), "--users", "20",
                            "--workdir", str(tmp_path)], spark=spark)

    setup = results.setup
    assert setup.ratings == 2_000 and setup.users == 20 and setup.alias in ("champion", "challenger")
    pairs = setup.candidate_pairs
    assert 0 < pairs < setup.users * setup.catalog
    assert set(results.best) == set(scoring.ORDER)
    for key in (scoring.JOB, scoring.STAGE, scoring.WORKERS, scoring.LIMIT, scoring.TODAY):
        assert results.best[key].rows == pairs, key
    assert all(timing.seconds > 0 for timing in results.best.values())
    assert results.check.identical, results.check
    assert results.check.users == setup.users and results.check.max_score_difference < 1e-4
    assert set(results.job_seconds) == {"model_and_towers", "embeddings", "ranking", "in_workers"}
    output = capsys.readouterr().out
    for name in scoring.NAMES.values():
        assert f"| {name} | " in output
    assert f"{pairs:,} candidate pairs" in output and "(a) / (b): " in output and "— identical" in output
    assert f"the copied features of {feature_lake}" in output
    figures = json.loads(output.strip().splitlines()[-1])
    assert figures["identical_top10"] is True and figures["candidate_pairs"] == pairs
    assert figures["ratio"] == pytest.approx(figures["job_pairs_per_s"] / figures["limit_pairs_per_s"], rel=1e-2)
    assert {"limit_pairs_per_s", "job_pairs_per_s", "today_pairs_per_s", "spark_startup_seconds"} <= set(figures)
    assert os.environ.get("MLFLOW_TRACKING_URI") == tracking_uri


def test_the_list_check_tells_identical_lists_from_a_wrong_one():
    def lists(items_by_user: dict[str, list[str]], scores: list[float]) -> pa.Table:
        rows = [{"user_id": user, "item_id": item, "score": scores[rank], "rank": rank + 1}
                for user, items in items_by_user.items() for rank, item in enumerate(items)]
        return pa.Table.from_pylist(rows)

    exhaustive = lists({"u1": ["a", "b", "c"], "u2": ["b", "a", "d"]}, [3.0, 2.0, 1.0])
    same = scoring.check_lists(lists({"u1": ["a", "b", "c"], "u2": ["b", "a", "d"]}, [3.0, 2.0, 1.0 + 1e-9]),
                               exhaustive)
    assert same.identical and same.users_identical == 2 and same.max_score_difference < 1e-8

    swapped = scoring.check_lists(lists({"u1": ["a", "c", "b"], "u2": ["b", "a", "d"]}, [3.0, 2.0, 1.0]), exhaustive)
    assert not swapped.identical and swapped.users_identical == 1 and swapped.max_score_difference == 1.0

    missing_user = scoring.check_lists(lists({"u1": ["a", "b", "c"]}, [3.0, 2.0, 1.0]), exhaustive)
    assert not missing_user.identical and missing_user.expected_users == 2

    sampled = scoring.check_lists(lists({"u1": ["a", "b", "c"], "u2": ["d", "a", "b"]}, [3.0, 2.0, 1.0]),
                                  lists({"u1": ["a", "b", "c"]}, [3.0, 2.0, 1.0]), users=["u1"])
    assert sampled.identical and sampled.users == sampled.expected_users == 1


def test_the_exhaustive_sample_counts_the_unseen_pairs_of_its_users_only():
    towers = scoring.DayTowers(0.0, pa.array(["u1", "u2", "u3"]), Tower(np.zeros(3), np.zeros((3, 2))),
                               pa.array(["a", "b", "c", "d"]), Tower(np.zeros(4), np.zeros((4, 2))))
    day = scoring.InMemoryDay(towers, rated_users=np.array([0, 0, 0, 1, 2, 2]),
                              rated_items=np.array([1, 1, 3, 0, 0, 1]), users_version=0)
    sample = scoring.ExhaustiveSample.of(day, 2)
    assert sample.users == ["u1", "u2"] and sample.candidate_pairs == 2 * 4 - 3
