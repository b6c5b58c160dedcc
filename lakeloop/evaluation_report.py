"""The evaluation report beside a day's model (`evaluation/`), logged to the model's MLflow run.

Three plots, where people would rather look than read: the distribution of predicted ratings of each scorer
against the actual ratings, RMSE by user activity (training ratings of the user; new users are where a
recommender struggles), and the training curve (mean loss per epoch). `report.md` has the metrics table
and the quality gate's decision.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lakeloop.metrics import BIAS_BASELINE, CHAMPION, METRIC_PREFIX, MODEL, POPULARITY
from lakeloop.models import REPORT_DIR

LABELS = {MODEL: "new model", CHAMPION: "champion", BIAS_BASELINE: "bias baseline", POPULARITY: "popularity"}
RANKED_METRICS = ["rmse", "mae", "precision_at_10", "recall_at_10", "ndcg_at_10"]


def _prediction_distribution(labels: np.ndarray, predictions: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    bins = np.linspace(0.5, 5.5, 41)
    axis.hist(labels, bins=bins, color="lightgrey", label="actual rating")
    for name, values in predictions.items():
        axis.hist(values, bins=bins, histtype="step", linewidth=1.8, label=LABELS[name])
    axis.set(title="Predicted vs actual ratings (evaluation set)", xlabel="rating", ylabel="rows")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _error_by_activity(buckets: dict[str, dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    names = [name for name in LABELS if any(name in bucket for bucket in buckets.values())]
    figure, axis = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(len(names), 1)
    positions = np.arange(len(buckets))
    for offset, name in enumerate(names):
        axis.bar(positions + offset * width, [bucket.get(name, np.nan) for bucket in buckets.values()], width,
                 label=LABELS[name])
    axis.set_xticks(positions + width * (len(names) - 1) / 2,
                    [f"{bucket}\n{values['rows']} rows" for bucket, values in buckets.items()])
    axis.set(title="RMSE by the user's training ratings", xlabel="user's ratings in training", ylabel="RMSE")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _training_curve(epoch_losses: list[float], path: Path) -> None:
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(range(1, len(epoch_losses) + 1), epoch_losses, marker="o")
    axis.set(title="Training curve", xlabel="epoch", ylabel="mean squared error (training batches)")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _markdown(metrics: dict) -> str:
    gate = metrics["gate"]
    def cell(name: str, key: str) -> str:
        value = metrics.get(METRIC_PREFIX[name] + key)
        return "–" if value is None else f"{value:.4f}"

    rows = ["| " + " | ".join([LABELS[name], *(cell(name, key) for key in RANKED_METRICS)]) + " |"
            for name in LABELS if METRIC_PREFIX[name] + "ndcg_at_10" in metrics]
    champion = (f"champion: version {metrics['champion_version']} (trained on {metrics['champion_day']})"
                if "champion_version" in metrics else "champion: none yet")
    return "\n".join([
        f"# Evaluation of {metrics['day']}",
        "",
        f"{metrics['eval_rows']} evaluation ratings; top-10 ranking over {metrics['candidate_items']} candidate "
        f"items for {metrics['ranking_users']} users with held-out positives; {champion}.",
        "",
        "| scorer | " + " | ".join(RANKED_METRICS) + " |",
        "|---|" + "---|" * len(RANKED_METRICS),
        *rows,
        f"| global mean | {metrics['baseline_rmse']:.4f} | | | | |",
        "",
        f"**Quality gate: {'promoted' if gate['promote'] else 'not promoted'} → alias `{gate['alias']}`.** "
        f"{gate['reason']} (tolerance {gate['tolerance']:.1%}).",
        "",
    ])


def write_report(model_directory: Path, metrics: dict, labels: np.ndarray, predictions: dict[str, np.ndarray],
                 epoch_losses: list[float]) -> Path:
    """Write the plots and `report.md` under `<model directory>/evaluation/`; return that directory."""
    import matplotlib

    matplotlib.use("Agg")
    directory = model_directory / REPORT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    _prediction_distribution(labels, predictions, directory / "prediction_distribution.png")
    _error_by_activity(metrics["rmse_by_user_activity"], directory / "rmse_by_user_activity.png")
    if epoch_losses:
        _training_curve(epoch_losses, directory / "training_curve.png")
    (directory / "report.md").write_text(_markdown(metrics))
    return directory
