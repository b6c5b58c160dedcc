"""The quality gate's decisions at and around its boundaries."""

from __future__ import annotations

import pytest

from lakeloop.gate import GateDecision, quality_gate


def test_without_a_champion_beating_the_baseline_promotes():
    decision = quality_gate(0.90, baseline_rmse=0.95)
    assert decision.promote and decision.alias == "champion"
    assert "no champion" in decision.reason


def test_not_beating_the_baseline_never_promotes():
    assert quality_gate(0.95, baseline_rmse=0.95).alias == "challenger"
    rejected = quality_gate(0.96, baseline_rmse=0.95, champion_rmse=2.0, champion_version="3")
    assert not rejected.promote and "bias baseline" in rejected.reason


def test_the_champion_may_win_by_at_most_the_tolerance():
    within = quality_gate(1.01, baseline_rmse=1.2, champion_rmse=1.0, champion_version="3", tolerance=0.01)
    assert within.promote
    beyond = quality_gate(1.0101, baseline_rmse=1.2, champion_rmse=1.0, champion_version="3", tolerance=0.01)
    assert not beyond.promote and "champion v3" in beyond.reason and beyond.alias == "challenger"
    assert quality_gate(0.99, baseline_rmse=1.2, champion_rmse=1.0, champion_version="3", tolerance=0.0).promote


def test_the_decision_round_trips_through_json():
    decision = quality_gate(0.9, baseline_rmse=0.95, champion_rmse=0.85, champion_version="2", tolerance=0.05)
    payload = decision.to_json()
    assert payload["alias"] == decision.alias
    assert GateDecision.from_json(payload) == decision


@pytest.mark.parametrize("tolerance", [-0.1, float("nan"), float("inf")])
def test_a_tolerance_that_would_decide_nothing_is_refused(tolerance):
    """nan and inf would let any model that beats the baseline past a better champion."""
    with pytest.raises(ValueError, match="tolerance must be a finite number >= 0"):
        quality_gate(2.0, baseline_rmse=2.5, champion_rmse=1.0, champion_version="1", tolerance=tolerance)


def test_lists_that_lose_to_a_trivial_ranking_are_not_promoted():
    """A model may beat the bias baseline on RMSE and still rank worse than popularity: its lists are worthless."""
    decision = quality_gate(1.026, baseline_rmse=1.050, ndcg=0.037,
                            baseline_ndcg={"popularity": 0.120, "bias_baseline": 0.176})
    assert not decision.promote and decision.rule == "ndcg_vs_baselines"
    assert "bias baseline's 0.1760" in decision.reason
    promoted = quality_gate(1.026, baseline_rmse=1.050, ndcg=0.180,
                            baseline_ndcg={"popularity": 0.120, "bias_baseline": 0.176})
    assert promoted.promote and promoted.rule == "every_rule"


def test_a_model_ranking_worse_than_the_champion_by_more_than_the_tolerance_stays_challenger():
    baselines = {"popularity": 0.10, "bias_baseline": 0.12}
    worse = quality_gate(0.90, baseline_rmse=0.95, champion_rmse=0.91, champion_version="4", tolerance=0.01,
                         ndcg=0.150, baseline_ndcg=baselines, champion_ndcg=0.160)
    assert not worse.promote and worse.rule == "ndcg_vs_champion" and "champion v4" in worse.reason
    within = quality_gate(0.90, baseline_rmse=0.95, champion_rmse=0.91, champion_version="4", tolerance=0.01,
                          ndcg=0.1585, baseline_ndcg=baselines, champion_ndcg=0.160)
    assert within.promote and within.rule == "every_rule"


def test_each_rejection_names_its_rule():
    assert quality_gate(0.95, baseline_rmse=0.95).rule == "rmse_vs_bias_baseline"
    assert quality_gate(1.02, baseline_rmse=1.2, champion_rmse=1.0, champion_version="3").rule == "rmse_vs_champion"


def test_a_decision_stored_before_the_ranking_rules_still_reads():
    old = {"promote": True, "reason": "r", "rmse": 0.9, "baseline_rmse": 0.95, "champion_rmse": None,
           "champion_version": None, "tolerance": 0.01, "alias": "champion"}
    decision = GateDecision.from_json(old)
    assert decision.promote and decision.ndcg is None and decision.rule == ""
