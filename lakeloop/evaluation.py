"""Offline evaluation of a day's model next to the current `champion` and the baselines, on the same data,
for rating accuracy and top-10 ranking; then the quality gate.

See docs/evaluation-and-registry.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lakeloop.evaluation_report import write_report
from lakeloop.features import (
    EVAL,
    FEATURE_COLUMNS,
    ITEM_VOCAB,
    LABEL,
    OOV_INDEX,
    TRAIN,
    USER_VOCAB,
    DayFeatures,
    model_inputs,
    multi_hot,
)
from lakeloop.fm_model import ranking_model, rating_model
from lakeloop.gate import DEFAULT_TOLERANCE, quality_gate
from lakeloop.lake import Lake, as_lake
from lakeloop.metrics import (
    BIAS_BASELINE,
    CHAMPION,
    METRIC_PREFIX,
    MODEL,
    POPULARITY,
    RANKING_BASELINES,
    mae,
    ranking_metrics,
    rmse,
)
from lakeloop.models import EVALUATION, MODEL_FILE, REPORT_DIR, TRAIN_SUMMARY, ModelDirectory
from lakeloop.towers import FMTowers, UnknownModelError, check_against_model

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)
POSITIVE_RATING = 4.0
ACTIVITY_BUCKETS = ((0, 0, "new (0)"), (1, 9, "1-9"), (10, 49, "10-49"), (50, None, "50+"))
NDCG = "ndcg_at_10"
RATING_COLUMNS = ["user_id", "item_id", *FEATURE_COLUMNS, LABEL]


@dataclass(frozen=True)
class BiasBaseline:
    """r̂(u, i) = μ + b_u + b_i, with biases fitted by regularised alternating least squares (as Surprise's
    BaselineOnly); an index without training ratings (the OOV index 0) has bias 0."""

    mean: float
    user_bias: np.ndarray
    item_bias: np.ndarray

    @classmethod
    def fit(cls, users: np.ndarray, items: np.ndarray, labels: np.ndarray, user_reg: float = 15.0,
            item_reg: float = 10.0, iterations: int = 10) -> BiasBaseline:
        """Fit on training (user index, item index, rating) arrays."""
        mean = float(labels.mean())
        user_bias, item_bias = np.zeros(users.max() + 1), np.zeros(items.max() + 1)
        user_rows = np.bincount(users, minlength=len(user_bias))
        item_rows = np.bincount(items, minlength=len(item_bias))
        def shrunk_mean(index: np.ndarray, residuals: np.ndarray, rows: np.ndarray, reg: float) -> np.ndarray:
            sums = np.bincount(index, residuals, len(rows))
            return np.divide(sums, reg + rows, out=np.zeros(len(rows)), where=reg + rows > 0)

        for _ in range(iterations):
            item_bias = shrunk_mean(items, labels - mean - user_bias[users], item_rows, item_reg)
            user_bias = shrunk_mean(users, labels - mean - item_bias[items], user_rows, user_reg)
        return cls(mean, user_bias, item_bias)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predicted ratings for (user index, item index) arrays of the training vocabularies."""
        return self.mean + self.user_bias[users] + self.item_bias[items]


def history_inputs(entity: str, rating_sums: np.ndarray, rating_counts: np.ndarray,
                   prior_mean: float) -> dict[str, np.ndarray]:
    """The `<entity>_mean_rating` / `<entity>_rating_count` inputs; the prior mean without history."""
    means = np.divide(rating_sums, rating_counts, out=np.full(len(rating_sums), prior_mean),
                      where=rating_counts > 0)
    return {f"{entity}_mean_rating": means.astype(np.float32),
            f"{entity}_rating_count": np.asarray(rating_counts, np.float32)}


Scorer = Callable[[dict[str, np.ndarray], pa.Array, pa.Array], np.ndarray]
"""Predicted ratings (float64) from model inputs and the rows' user and item ids."""


def keras_scorer(model: keras.Model, ranking: bool = False) -> Scorer:
    """Score with a model of the day's partition (its inputs use this partition's vocabularies): predicted
    ratings, or with `ranking` the scores before the rating clip (`lakeloop.fm_model.ranking_model`)."""
    model = ranking_model(model) if ranking else rating_model(model)

    def score(inputs: dict[str, np.ndarray], user_ids: pa.Array, item_ids: pa.Array) -> np.ndarray:
        return np.asarray(model.predict(inputs, batch_size=8192, verbose=0), np.float64).reshape(-1)

    return score


def bias_scorer(baseline: BiasBaseline) -> Scorer:
    """Score with the user/item-bias baseline fitted on the day's training set."""
    def score(inputs: dict[str, np.ndarray], user_ids: pa.Array, item_ids: pa.Array) -> np.ndarray:
        return baseline.predict(inputs["user_idx"], inputs["item_idx"])

    return score


def popularity_scorer() -> Scorer:
    """Rank by the item's training ratings (most-rated first): the popularity baseline of the ranking metrics."""
    def score(inputs: dict[str, np.ndarray], user_ids: pa.Array, item_ids: pa.Array) -> np.ndarray:
        return np.asarray(inputs["item_rating_count"], np.float64)

    return score


@dataclass(frozen=True)
class TowerRanker:
    """Rank by a model's user and item towers (`lakeloop.towers`): a ranking set's score matrix is one matrix product
    of its users' and items' towers instead of the model called on every pair. `user_vocabulary`/`item_vocabulary`
    re-index the set's ids for a model of another day's partition (the champion)."""

    model: keras.Model
    towers: FMTowers
    user_vocabulary: pa.Table | None = None
    item_vocabulary: pa.Table | None = None

    def matrix(self, ranking: RankingSet) -> np.ndarray:
        """The (users, items) ranking scores of the set, checked against the model on sample pairs."""
        users, items = dict(ranking.user_inputs), dict(ranking.item_inputs)
        if self.user_vocabulary is not None:
            users["user_idx"] = vocabulary_index(ranking.user_ids, self.user_vocabulary, "user_id", "user_idx")
        if self.item_vocabulary is not None:
            items["item_idx"] = vocabulary_index(ranking.item_ids, self.item_vocabulary, "item_id", "item_idx")
        check_against_model(self.model, self.towers, users, items)
        return self.towers.scores(self.towers.user_tower(users), self.towers.item_tower(items))


def tower_ranker(model: keras.Model, user_vocabulary: pa.Table | None = None,
                 item_vocabulary: pa.Table | None = None) -> TowerRanker | None:
    """A `TowerRanker` of the model, or None if `lakeloop.towers` does not know its graph (rank it pair by pair)."""
    try:
        return TowerRanker(model, FMTowers.of(model), user_vocabulary, item_vocabulary)
    except UnknownModelError as error:
        log.info("ranking pair by pair: %s", error)
        return None


def vocabulary_index(ids: pa.Array, vocabulary: pa.Table, id_column: str, index_column: str) -> np.ndarray:
    """The index of each id in a partition's vocabulary table; `OOV_INDEX` for ids it does not hold."""
    positions = pc.index_in(ids, value_set=vocabulary[id_column].combine_chunks())
    indices = vocabulary[index_column].combine_chunks().take(positions)
    return pc.fill_null(indices, OOV_INDEX).to_numpy().astype(np.int64)


@dataclass(frozen=True)
class Champion:
    """The registry's current champion: its version, the day whose partition it was trained on, the model."""

    version: str
    day: date
    model: keras.Model

    def scorer(self, lake: Lake | Path | str, ranking: bool = False) -> Scorer:
        """Score with the champion (as `keras_scorer`), re-indexing users and items with its own day's
        vocabularies."""
        users, items = self.vocabularies(lake)
        predict = keras_scorer(self.model, ranking)

        def score(inputs: dict[str, np.ndarray], user_ids: pa.Array, item_ids: pa.Array) -> np.ndarray:
            own = {**inputs, "user_idx": vocabulary_index(user_ids, users, "user_id", "user_idx"),
                   "item_idx": vocabulary_index(item_ids, items, "item_id", "item_idx")}
            return predict(own, user_ids, item_ids)

        return score

    def ranker(self, lake: Lake | Path | str) -> TowerRanker | Scorer:
        """Rank with the champion: by its towers on its own day's vocabularies, or pair by pair (`scorer`) if
        `lakeloop.towers` does not know its graph."""
        users, items = self.vocabularies(lake)
        return tower_ranker(self.model, users, items) or self.scorer(lake, ranking=True)

    def vocabularies(self, lake: Lake | Path | str) -> tuple[pa.Table, pa.Table]:
        """The user and item vocabularies (id → index) of the champion's own day, of one features run."""
        features = DayFeatures.of(lake, self.day)
        return (features.read(USER_VOCAB, columns=["user_id", "user_idx"]),
                features.read(ITEM_VOCAB, columns=["item_id", "item_idx"]))


@dataclass(frozen=True)
class RankingSet:
    """Users with held-out positives × candidate items, with what each user rated in training (`seen`) and
    the held-out positives (`relevant`), and the model inputs of every pair."""

    user_ids: pa.Array
    user_inputs: dict[str, np.ndarray]
    item_ids: pa.Array
    item_inputs: dict[str, np.ndarray]
    seen: np.ndarray
    relevant: np.ndarray

    @classmethod
    def build(cls, train: pa.Table, evaluation: pa.Table, prior_mean: float, max_users: int) -> RankingSet:
        """From the partition's training and evaluation examples; at most `max_users` users (a seeded sample)."""
        item_idx = train["item_idx"].to_numpy()
        known, first = np.unique(item_idx, return_index=True)
        first = first[known != OOV_INDEX]
        items = train.take(first)
        item_ids = items["item_id"].combine_chunks()
        item_sums = np.bincount(item_idx, train[LABEL].to_numpy().astype(np.float64))
        item_counts = np.bincount(item_idx)
        candidate_idx = items["item_idx"].to_numpy()
        item_inputs = {"item_idx": candidate_idx, "year_idx": items["year_idx"].to_numpy(),
                       "genres": multi_hot(items["genres"]),
                       **history_inputs("item", item_sums[candidate_idx], item_counts[candidate_idx], prior_mean)}
        positives = evaluation.filter(pc.greater_equal(evaluation[LABEL], POSITIVE_RATING))
        item_position = pc.index_in(positives["item_id"], value_set=item_ids)
        user_ids = pc.unique(positives["user_id"]).sort()
        user_position = pc.index_in(positives["user_id"], value_set=user_ids).to_numpy()
        relevant = np.zeros((len(user_ids), len(item_ids)), dtype=bool)
        in_catalog = item_position.is_valid().to_numpy(zero_copy_only=False)
        relevant[user_position[in_catalog], pc.drop_null(item_position).to_numpy()] = True
        seen = np.zeros_like(relevant)
        train_user = pc.index_in(train["user_id"], value_set=user_ids)
        train_item = pc.index_in(train["item_id"], value_set=item_ids)
        both = pc.and_(train_user.is_valid(), train_item.is_valid())
        seen[pc.filter(train_user, both).to_numpy(), pc.filter(train_item, both).to_numpy()] = True
        keep = np.flatnonzero((relevant & ~seen).any(axis=1))
        if len(keep) > max_users:
            keep = np.sort(np.random.default_rng(0).choice(keep, max_users, replace=False))
        user_ids = user_ids.take(keep)
        train_rows = pc.index_in(train["user_id"], value_set=user_ids)
        counted = train_rows.is_valid()
        rows = pc.filter(train_rows, counted).to_numpy()
        sums = np.bincount(rows, pc.filter(train[LABEL], counted).to_numpy().astype(np.float64), len(keep))
        counts = np.bincount(rows, minlength=len(keep))
        first_eval = pc.index_in(user_ids, value_set=evaluation["user_id"].combine_chunks()).to_numpy()
        user_inputs = {"user_idx": evaluation["user_idx"].combine_chunks().take(first_eval).to_numpy(),
                       **history_inputs("user", sums, counts, prior_mean)}
        return cls(user_ids, user_inputs, item_ids, item_inputs, seen[keep], relevant[keep])

    def scores(self, scorer: Scorer | TowerRanker, max_rows: int = 250_000) -> np.ndarray:
        """The scorer's (users, items) score matrix: a `TowerRanker`'s by one matrix product, another scorer's
        pair by pair, a block of users at a time."""
        if isinstance(scorer, TowerRanker):
            return scorer.matrix(self)
        users, items = len(self.user_ids), len(self.item_ids)
        block = max(1, max_rows // max(items, 1))
        result = np.empty((users, items))
        for start in range(0, users, block):
            rows = np.arange(start, min(start + block, users))
            user_rows, item_rows = np.repeat(rows, items), np.tile(np.arange(items), len(rows))
            inputs = {**{name: values[user_rows] for name, values in self.user_inputs.items()},
                      **{name: values[item_rows] for name, values in self.item_inputs.items()}}
            result[rows] = scorer(inputs, self.user_ids.take(user_rows),
                                  self.item_ids.take(item_rows)).reshape(len(rows), items)
        return result


def rmse_by_user_activity(training_counts: np.ndarray, labels: np.ndarray,
                          predictions: dict[str, np.ndarray]) -> dict[str, dict]:
    """Rows and each scorer's RMSE per bucket of the user's training ratings (`ACTIVITY_BUCKETS`)."""
    buckets = {}
    for low, high, name in ACTIVITY_BUCKETS:
        rows = (training_counts >= low) & (training_counts <= (np.inf if high is None else high))
        if rows.any():
            buckets[name] = {"rows": int(rows.sum()),
                             **{scorer: rmse(values[rows], labels[rows]) for scorer, values in predictions.items()}}
    return buckets


def evaluate_model(lake: Lake | Path | str, model_name: str, day: date, champion: Champion | None = None,
                   tolerance: float = DEFAULT_TOLERANCE, max_ranking_users: int = 1000) -> dict:
    """Score the day's model, the champion and the baselines on the day's evaluation data, apply the quality
    gate, write the report and then `evaluation.json` beside the model (on an object store: made in a local
    temporary directory and uploaded); return the metrics."""
    import keras

    lake = as_lake(lake)
    directory = ModelDirectory.of(lake, model_name, day)
    with directory.local_copy(MODEL_FILE) as local:
        model = keras.saving.load_model(local / MODEL_FILE)
    features = DayFeatures.of(lake, day)
    evaluation = features.read(EVAL, columns=RATING_COLUMNS)
    train = features.read(TRAIN, columns=["user_id", "item_id", "user_idx", "item_idx", "year_idx", "genres", LABEL])
    spec = features.spec
    labels = evaluation[LABEL].to_numpy().astype(np.float64)
    train_labels = train[LABEL].to_numpy().astype(np.float64)
    bias = BiasBaseline.fit(train["user_idx"].to_numpy(), train["item_idx"].to_numpy(), train_labels)
    scorers = {MODEL: keras_scorer(model), BIAS_BASELINE: bias_scorer(bias)}
    rankers = {MODEL: tower_ranker(model) or keras_scorer(model, ranking=True), BIAS_BASELINE: scorers[BIAS_BASELINE],
               POPULARITY: popularity_scorer()}
    if champion is not None:
        scorers[CHAMPION], rankers[CHAMPION] = champion.scorer(lake), champion.ranker(lake)
    inputs = model_inputs(evaluation)
    users, items = evaluation["user_id"].combine_chunks(), evaluation["item_id"].combine_chunks()
    predictions = {name: scorer(inputs, users, items) for name, scorer in scorers.items()}
    ranking = RankingSet.build(train, evaluation, spec.prior_mean, max_ranking_users)
    metrics = {"day": day.isoformat(), "eval_rows": int(len(labels)), "ranking_users": len(ranking.user_ids),
               "candidate_items": len(ranking.item_ids), "baseline_mean": float(train_labels.mean()),
               "baseline_rmse": rmse(np.full_like(labels, train_labels.mean()), labels),
               "features_versions": features.versions}
    for name in rankers:
        scored = ({"rmse": rmse(predictions[name], labels), "mae": mae(predictions[name], labels)}
                  if name in predictions else {})
        scored.update(ranking_metrics(ranking.scores(rankers[name]), ranking.seen, ranking.relevant))
        metrics.update({f"{METRIC_PREFIX[name]}{key}": value for key, value in scored.items()})
    metrics["rmse_by_user_activity"] = rmse_by_user_activity(inputs["user_rating_count"], labels, predictions)
    if champion is not None:
        metrics.update(champion_version=champion.version, champion_day=champion.day.isoformat())
    decision = quality_gate(metrics["rmse"], metrics["bias_baseline_rmse"], metrics.get("champion_rmse"),
                            champion.version if champion else None, tolerance, ndcg=metrics[NDCG],
                            baseline_ndcg={name: metrics[METRIC_PREFIX[name] + NDCG] for name in RANKING_BASELINES},
                            champion_ndcg=metrics.get(METRIC_PREFIX[CHAMPION] + NDCG))
    metrics["gate"] = decision.to_json()
    log.info("quality gate for %s %s: %s → alias %s", model_name, day, decision.reason, decision.alias)
    summary = directory.read_json(TRAIN_SUMMARY) if directory.exists(TRAIN_SUMMARY) else {}
    with directory.local_copy() as local:
        write_report(local, metrics, labels, predictions, summary.get("epoch_losses") or [])
        directory.publish(local, REPORT_DIR)
    directory.write_json(EVALUATION, metrics)
    log.info("evaluation of %s for %s: %s", model_name, day,
             {key: value for key, value in metrics.items() if not isinstance(value, dict)})
    return metrics
