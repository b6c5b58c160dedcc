"""The batch-scoring benchmark runs end to end at a tiny size: the job, its scoring stage and the one-process limit
score the same candidate pairs, and the job's output is their top 10; the output check catches a wrong list."""

from __future__ import annotations

import os
from datetime import date

import numpy as np
import pyarrow as pa
import pytest

from bench import scoring

DAY = date(2026, 11, 20)


@pytest.mark.slow
def test_the_job_its_scoring_stage_and_the_limit_score_the_same_pairs(spark, feature_lake, tmp_path, capsys):
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI")
    results = scoring.main(["--quick", "--features-from", str(feature_lake), "--day", DAY.isoformat(), "--users", "20",
                            "--workdir", str(tmp_path)], spark=spark)

    setup = results.setup
    assert setup.ratings == 2_000 and setup.users == 20 and setup.alias in ("champion", "challenger")
    pairs = results.candidate_pairs
    assert pairs == setup.users * setup.catalog - setup.rated_pairs
    assert set(results.best) == set(scoring.ORDER)
    for key in (scoring.JOB, scoring.STAGE, scoring.LIMIT, scoring.JOB_FUNCTION,
                scoring.CANDIDATES):
        assert results.best[key].rows == pairs, key
    assert results.best[scoring.STAGE_FIXED].rows == 2
    assert all(timing.seconds > 0 for timing in results.best.values())
    assert results.top_k.passed, results.top_k
    assert results.top_k.users == setup.users and results.top_k.rows == setup.users * scoring.TOP_K
    report = capsys.readouterr().out
    for name in scoring.NAMES.values():
        assert f"| {name} | " in report
    assert f"{pairs:,} candidate pairs" in report and "(a) / (c): " in report and "— passed" in report
    assert os.environ.get("MLFLOW_TRACKING_URI") == tracking_uri


def test_the_output_check_tells_a_top_ten_from_a_wrong_list():
    users = np.repeat(["u1", "u2"], 12)
    items = np.tile([f"i{index:02d}" for index in range(12)], 2)
    scores = np.tile(np.linspace(5.0, 1.0, 12), 2)
    candidates = pa.table({"user_id": users, "item_id": items})
    top = pa.table({"user_id": np.repeat(["u1", "u2"], 10), "item_id": np.tile(items[:10], 2),
                    "score": np.tile(scores[:10], 2), "rank": np.tile(np.arange(1, 11, dtype=np.int32), 2)})

    exact = scoring.check_top_k(top, candidates, scores)
    assert exact.passed and exact.users_identical == 2 and exact.rows == exact.expected_rows == 20

    near_tie = scores.copy()
    near_tie[10] = near_tie[9] + 1e-7
    swapped = scoring.check_top_k(top, candidates, near_tie)
    assert swapped.users_valid == 2 and swapped.users_identical == 1

    wrong_item = top.set_column(1, "item_id", pa.array(["i11", *items[1:10], *items[:10]]))
    wrong = scoring.check_top_k(wrong_item, candidates, scores)
    assert not wrong.passed and wrong.users_valid == 1

    missing_user = scoring.check_top_k(top.slice(0, 10), candidates, scores)
    assert not missing_user.passed and missing_user.expected_users == 2
