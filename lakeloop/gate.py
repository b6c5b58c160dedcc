"""The quality gate: whether a newly trained model may replace the `champion`.

A model is promoted only if it beats the user/item-bias baseline on RMSE, its top-10 lists beat the trivial
rankings (popularity and bias baseline) on NDCG@10, and it is not worse than the current champion by more than
`tolerance` (relative: 0.01 allows 1 % worse) on RMSE nor on NDCG@10, all on the same evaluation data. The
decision names the rule that decided. A model that fails the gate is still registered, as the `challenger`; the
run goes on (a skipped promotion is no failure).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

CHAMPION = "champion"
CHALLENGER = "challenger"


DEFAULT_TOLERANCE = 0.01
RMSE_VS_BASELINE, NDCG_VS_BASELINES = "rmse_vs_bias_baseline", "ndcg_vs_baselines"
RMSE_VS_CHAMPION, NDCG_VS_CHAMPION, EVERY_RULE = "rmse_vs_champion", "ndcg_vs_champion", "every_rule"


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict, the rule that decided it (the first one failed, else `every_rule`), and the numbers it
    was taken on."""

    promote: bool
    reason: str
    rmse: float
    baseline_rmse: float
    champion_rmse: float | None
    champion_version: str | None
    tolerance: float
    rule: str = ""
    ndcg: float | None = None
    baseline_ndcg: dict[str, float] = field(default_factory=dict)
    champion_ndcg: float | None = None

    @property
    def alias(self) -> str:
        """The registry alias the new model gets."""
        return CHAMPION if self.promote else CHALLENGER

    def to_json(self) -> dict:
        """The decision as a JSON object (evaluation report, MLflow tags)."""
        return {**asdict(self), "alias": self.alias}

    @classmethod
    def from_json(cls, payload: dict) -> GateDecision:
        """The decision stored by `to_json` (a decision stored before the ranking rules reads with none)."""
        return cls(**{key: value for key, value in payload.items() if key != "alias"})


def quality_gate(rmse: float, baseline_rmse: float, champion_rmse: float | None = None,
                 champion_version: str | None = None, tolerance: float = DEFAULT_TOLERANCE, *,
                 ndcg: float | None = None, baseline_ndcg: dict[str, float] | None = None,
                 champion_ndcg: float | None = None) -> GateDecision:
    """Decide on a new model from its RMSE and NDCG@10, the baselines' (`baseline_ndcg`: NDCG@10 per trivial
    ranking) and the champion's (if any) on the same data. Without `ndcg` only the RMSE rules apply."""
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"the gate tolerance must be a finite number >= 0, got {tolerance}")
    baseline_ndcg = dict(baseline_ndcg or {})
    decided = dict(rmse=rmse, baseline_rmse=baseline_rmse, champion_rmse=champion_rmse,
                   champion_version=champion_version, tolerance=tolerance, ndcg=ndcg, baseline_ndcg=baseline_ndcg,
                   champion_ndcg=champion_ndcg if ndcg is not None else None)

    def reject(rule: str, reason: str) -> GateDecision:
        return GateDecision(False, reason, rule=rule, **decided)

    if not rmse < baseline_rmse:
        return reject(RMSE_VS_BASELINE, f"RMSE {rmse:.4f} does not beat the bias baseline's {baseline_rmse:.4f}")
    passed = [f"RMSE {rmse:.4f} beats the bias baseline's {baseline_rmse:.4f}"]
    if ndcg is not None and baseline_ndcg:
        best = max(baseline_ndcg, key=baseline_ndcg.__getitem__)
        if not ndcg > baseline_ndcg[best]:
            return reject(NDCG_VS_BASELINES, f"NDCG@10 {ndcg:.4f} does not beat the {best.replace('_', ' ')}'s "
                                             f"{baseline_ndcg[best]:.4f}: its top-10 lists lose to a trivial ranking")
        passed.append(f"NDCG@10 {ndcg:.4f} beats every baseline's (best: {best.replace('_', ' ')} "
                      f"{baseline_ndcg[best]:.4f})")
    if champion_rmse is None:
        return GateDecision(True, "; ".join([*passed, "no champion yet"]), rule=EVERY_RULE, **decided)
    limit = champion_rmse * (1 + tolerance)
    if rmse > limit:
        return reject(RMSE_VS_CHAMPION, f"RMSE {rmse:.4f} loses to champion v{champion_version}'s {champion_rmse:.4f} "
                                        f"by more than {tolerance:.1%} (limit {limit:.4f})")
    passed.append(f"RMSE within {tolerance:.1%} of champion v{champion_version}'s {champion_rmse:.4f}")
    if ndcg is not None and champion_ndcg is not None:
        floor = champion_ndcg * (1 - tolerance)
        if ndcg < floor:
            return reject(NDCG_VS_CHAMPION, f"NDCG@10 {ndcg:.4f} loses to champion v{champion_version}'s "
                                            f"{champion_ndcg:.4f} by more than {tolerance:.1%} (floor {floor:.4f})")
        passed.append(f"NDCG@10 within {tolerance:.1%} of the champion's {champion_ndcg:.4f}")
    return GateDecision(True, "; ".join(passed), rule=EVERY_RULE, **decided)
