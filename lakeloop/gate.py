"""The quality gate: whether a newly trained model may replace the `champion`.

A model is promoted only if it beats the user/item-bias baseline and is not worse than the current champion
by more than `tolerance` (relative RMSE: 0.01 allows 1 % worse) on the same evaluation data. A model that
fails the gate is still registered, as the `challenger`; the run goes on (a skipped promotion is no failure).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

CHAMPION = "champion"
CHALLENGER = "challenger"
DEFAULT_TOLERANCE = 0.01


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict, with the numbers it was taken on."""

    promote: bool
    reason: str
    rmse: float
    baseline_rmse: float
    champion_rmse: float | None
    champion_version: str | None
    tolerance: float

    @property
    def alias(self) -> str:
        """The registry alias the new model gets."""
        return CHAMPION if self.promote else CHALLENGER

    def to_json(self) -> dict:
        """The decision as a JSON object (evaluation report, MLflow tags)."""
        return {**asdict(self), "alias": self.alias}

    @classmethod
    def from_json(cls, payload: dict) -> GateDecision:
        """The decision stored by `to_json`."""
        return cls(**{key: value for key, value in payload.items() if key != "alias"})


def quality_gate(rmse: float, baseline_rmse: float, champion_rmse: float | None = None,
                 champion_version: str | None = None, tolerance: float = DEFAULT_TOLERANCE) -> GateDecision:
    """Decide on a new model from its RMSE, the bias baseline's and the champion's (if any) on the same data."""
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"the gate tolerance must be a finite number >= 0, got {tolerance}")
    decided = dict(rmse=rmse, baseline_rmse=baseline_rmse, champion_rmse=champion_rmse,
                   champion_version=champion_version, tolerance=tolerance)
    if not rmse < baseline_rmse:
        return GateDecision(False, f"RMSE {rmse:.4f} does not beat the bias baseline's {baseline_rmse:.4f}",
                            **decided)
    if champion_rmse is None:
        return GateDecision(True, f"RMSE {rmse:.4f} beats the bias baseline's {baseline_rmse:.4f}; no champion yet",
                            **decided)
    limit = champion_rmse * (1 + tolerance)
    if rmse > limit:
        return GateDecision(False, f"RMSE {rmse:.4f} loses to champion v{champion_version}'s {champion_rmse:.4f} "
                                   f"by more than {tolerance:.1%} (limit {limit:.4f})", **decided)
    return GateDecision(True, f"RMSE {rmse:.4f} beats the bias baseline's {baseline_rmse:.4f} and is within "
                              f"{tolerance:.1%} of champion v{champion_version}'s {champion_rmse:.4f}", **decided)
