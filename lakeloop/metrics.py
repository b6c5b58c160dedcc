"""The figures a model is judged by (RMSE, MAE, precision/recall/NDCG@k) and the names of the scorers compared.

Shared by evaluation (which computes them), the report (which plots them) and the quality gate's callers;
pure numpy, so any of them can import it. See docs/evaluation-and-registry.md.
"""

from __future__ import annotations

import numpy as np

TOP_K = 10
MODEL, CHAMPION, BIAS_BASELINE, POPULARITY = "model", "champion", "bias_baseline", "popularity"
METRIC_PREFIX = {MODEL: "", CHAMPION: "champion_", BIAS_BASELINE: "bias_baseline_", POPULARITY: "popularity_"}
RANKING_BASELINES = (POPULARITY, BIAS_BASELINE)
"""The trivial rankings a model's top-10 lists must beat (popularity ranks by training ratings, so it has no RMSE)."""


def rmse(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Root mean squared error."""
    return float(np.sqrt(np.mean((np.asarray(predictions, np.float64) - labels) ** 2)))


def mae(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Mean absolute error."""
    return float(np.mean(np.abs(np.asarray(predictions, np.float64) - labels)))


def ranking_metrics(scores: np.ndarray, seen: np.ndarray, relevant: np.ndarray, k: int = TOP_K) -> dict[str, float]:
    """Mean precision@k, recall@k and NDCG@k (binary relevance) of each row's top k unseen items.

    `scores`, `seen` and `relevant` are (users, items); ties rank the lower item position first.
    """
    masked = np.where(seen, -np.inf, scores)
    top = np.argsort(-masked, axis=1, kind="stable")[:, :k]
    hits = np.take_along_axis(relevant & ~seen, top, axis=1)
    relevant_count = (relevant & ~seen).sum(axis=1)
    if not relevant_count.all():
        raise ValueError("every ranked user needs at least one relevant unseen item")
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)[np.minimum(relevant_count, k) - 1]
    return {f"precision_at_{k}": float((hits.sum(axis=1) / k).mean()),
            f"recall_at_{k}": float((hits.sum(axis=1) / relevant_count).mean()),
            f"ndcg_at_{k}": float(((hits * discounts[:hits.shape[1]]).sum(axis=1) / ideal).mean())}
