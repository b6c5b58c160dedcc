"""Batch scoring: the batch prediction job (users in blocks × the catalog, by the champion's user and item towers)
against the one-process limit (the same towers in memory: a matrix product and a partial sort) and against the
exhaustive job it replaced (every unseen pair scored by the Keras model), on a model trained and registered as the
daily loop would; the job's top-10 lists are checked against the exhaustive job's.

    .venv/bin/python -m bench.scoring --quick              # a smoke run: 3,000 ratings, one round
    .venv/bin/python -m bench.scoring --events 1000000     # a synthetic day of 1M events

The last line printed is one JSON object with the figures. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench.harness import (
    REPO,
    Measurement,
    best_of,
    local_environment,
    print_json_line,
    round_order,
    start_spark,
    table_header,
    table_row,
    work_directory,
)
from bench.support.exhaustive_scoring import run_exhaustive
from bench.support.fm_training import train_in_process
from bench.support.movielens_lake import END_DAY, raw_table, replay_to_lake, time_split_features, write_raw_day
from jobs.batch_predict import PREDICTIONS, SCORED_SCHEMA, ItemRanking, PredictOptions, candidate_inputs, top_items
from jobs.features import FeatureTables, write_features
from lakeloop.delta import read_partition
from lakeloop.embeddings import DayTowers, build_day_towers, write_embeddings
from lakeloop.features import (
    EVAL,
    FEATURE_TABLES,
    FEATURES,
    ITEM_HISTORY,
    ITEM_VOCAB,
    TRAIN,
    USER_HISTORY,
    USER_RATED,
    USER_VOCAB,
    DayFeatures,
    read_feature_summary,
    read_features,
)
from lakeloop.lake import as_lake
from lakeloop.models import TRAIN_SUMMARY, model_dir, write_json
from lakeloop.names import MOVIES
from lakeloop.spark_jobs import read_feature_table
from lakeloop.towers import EXCLUDED_SCORE, FMTowers, pair_scores, top_k

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from lakeloop.movielens import MovieLens

MODEL = "scoring-bench-fm"
TOP_K = 10
# The session as spark-submit runs batch_predict with conf/spark/spark-defaults.conf: Python workers reused across
# its tasks (Spark's default, which bench.harness turns off for tfspark's training; a fresh worker per task cost the 1M
# day's job ~3 s of its ~4 s ranking), and one BLAS thread in each worker.
JOB_SPARK_CONF = {"spark.python.worker.reuse": "true", "spark.executorEnv.OPENBLAS_NUM_THREADS": "1"}
LIMIT_BLOCK = 8192  # users per matrix product in the limit: an (8,192 × catalog) float64 block, 110 MB at 1,682
JOB, STAGE, WORKERS, LIMIT, TODAY, STARTUP = "(a)", "(a1)", "(a2)", "(b)", "(c)", "(s)"
NAMES = {
    JOB: "(a) `batch_predict.run`, the whole job: registry, model and towers, embeddings, ranking, write",
    STAGE: "(a1) the job's ranking stage alone: materialised `candidate_inputs` → `mapInArrow(top_items)` → count",
    WORKERS: "(a2) the job's workers' own ranking time (towers, matmul, mask, top 10) over the task slots",
    LIMIT: "(b) one process, the same towers in memory: matmul + mask + argpartition top 10 (the limit)",
    TODAY: "(c) the exhaustive job it replaced: cross join, `predict_on_batch` per pair, Window top 10, write",
    STARTUP: "for information: (s) Spark start-up, a fresh local[2] session's first job with a Python worker (not in "
             "any figure above)",
}
ORDER = [JOB, STAGE, WORKERS, LIMIT, TODAY, STARTUP]


@dataclass(frozen=True)
class ScoringSetup:
    """The day's lake and registered model the alternatives score with, and the candidates' shape."""

    lake: Path
    day: date
    ratings: int
    events: int | None
    model_name: str
    alias: str
    version: str
    epochs: int
    users: int
    catalog: int
    rated_pairs: int

    @property
    def candidate_pairs(self) -> int:
        """Users × catalog movies − the pairs the users rated in the window (the unseen pairs every list is cut
        from)."""
        return self.users * self.catalog - self.rated_pairs


@dataclass(frozen=True)
class ListCheck:
    """How the job's top-k lists compare with the exhaustive job's (the Keras model's score of every unseen pair).

    Identical: the same items in the same order for every user. Where a list differs, the largest gap between
    the two jobs' scores of the items they disagree on says whether it is a float near-tie."""

    users: int
    expected_users: int
    users_identical: int
    max_score_difference: float

    @property
    def identical(self) -> bool:
        """Whether every user's list equals the exhaustive job's."""
        return self.users == self.expected_users == self.users_identical

    def describe(self, k: int) -> str:
        """One line for the report."""
        return (f"top-{k} lists of (a) identical to (c)'s (exhaustive scoring by the Keras model) for "
                f"{self.users_identical:,} of {self.expected_users:,} users ((a) listed {self.users:,}); largest "
                f"score difference on the same (user, item) {self.max_score_difference:.2g} — "
                f"{'identical' if self.identical else 'DIFFERENT'}")


@dataclass
class ScoringResults:
    """Every figure of one run: the best round of each alternative, the list check, the job's phases."""

    setup: ScoringSetup
    repeat: int
    best: dict[str, Measurement]
    rounds: dict[str, list[Measurement]]
    check: ListCheck
    job_seconds: dict[str, float]
    load_averages: tuple[tuple[float, ...], tuple[float, ...]]
    features_from: Path | None = None

    def ratio(self, key: str, over: str = LIMIT) -> float:
        """Pairs/s of `key` over pairs/s of `over`, best rounds."""
        return self.best[key].rows_per_second / self.best[over].rows_per_second

    def summary(self) -> dict:
        """The figures as one JSON object (the bench's last line)."""
        return {"events": self.setup.events, "ratings": self.setup.ratings, "users": self.setup.users,
                "catalog": self.setup.catalog, "candidate_pairs": self.setup.candidate_pairs,
                "limit_pairs_per_s": round(self.best[LIMIT].rows_per_second),
                "job_pairs_per_s": round(self.best[JOB].rows_per_second), "ratio": float(f"{self.ratio(JOB):.4g}"),
                "stage_pairs_per_s": round(self.best[STAGE].rows_per_second),
                "workers_pairs_per_s": round(self.best[WORKERS].rows_per_second),
                "today_pairs_per_s": round(self.best[TODAY].rows_per_second),
                "job_vs_today": float(f"{self.ratio(JOB, TODAY):.4g}"),
                "job_seconds": round(self.best[JOB].seconds, 3), "today_seconds": round(self.best[TODAY].seconds, 3),
                "limit_seconds": round(self.best[LIMIT].seconds, 3),
                "spark_startup_seconds": round(self.best[STARTUP].seconds, 3), "job_phase_seconds": self.job_seconds,
                "identical_top10": self.check.identical, "users_checked": self.check.expected_users,
                "users_identical": self.check.users_identical,
                "max_score_difference": self.check.max_score_difference, "repeat": self.repeat,
                "load_average": [self.load_averages[0][0], self.load_averages[1][0]]}


# ---------------------------------------------------------------------------------------------------------
# The day's lake and model


def ratings_slice(movielens: MovieLens, ratings: int | None) -> MovieLens:
    """The first `ratings` ratings in (user, time) order: whole histories of a few users (all when None)."""
    from lakeloop.movielens import MovieLens

    if ratings is None:
        return movielens
    ordered = movielens.ratings.append_column("user_number", pc.cast(movielens.ratings["user_id"], pa.int64()))
    ordered = ordered.sort_by([("user_number", "ascending"), ("timestamp", "ascending")]).drop_columns("user_number")
    return MovieLens(ordered.slice(0, ratings), movielens.movies)


def build_replayed_lake(spark: SparkSession, movielens: MovieLens, lake: Path) -> None:
    """The catalog, `movielens` replayed as `END_DAY`'s raw ratings, and the ETL and features jobs run on it."""
    replay_to_lake(movielens, lake, 1, END_DAY)
    time_split_features(spark, lake, 1)


def build_synthetic_lake(spark: SparkSession, movielens: MovieLens, lake: Path, events: int) -> None:
    """The catalog and a synthetic day of `events` events (as the e2e bench generates it) as `END_DAY`'s raw
    ratings, then the ETL and features jobs."""
    from bench.support.synthetic_events import generate_events
    from jobs import etl, features
    from lakeloop.replay import write_catalog

    write_catalog(movielens, lake)
    write_raw_day(lake, END_DAY, raw_table(generate_events(movielens, events, END_DAY)))
    etl.run(spark, lake, END_DAY)
    features.run(spark, lake, END_DAY, features.FeatureOptions(window_days=1))


def copy_features(spark: SparkSession, source: Path, lake: Path, day: date, users: int | None) -> None:
    """The catalog and the day's features of another lake, committed into `lake` (`commit_features`): the benchmark
    never writes to `source`."""
    shutil.copytree(source / MOVIES, lake / MOVIES)
    commit_features(spark, source, lake, day, users)


def commit_features(spark: SparkSession, source: Path, lake: Path, day: date, users: int | None) -> None:
    """Commit the day's feature tables of `source` as `lake`'s features of the day, by the features job's own write
    (`jobs.features.write_features`: the tables, then train with the summary naming their versions), keeping only
    the first `users` users (by id) of the user history when given: the users batch prediction scores. `source` may
    be `lake` itself (its day's tables are read from the files of the version read, which the rewrite keeps)."""
    features = DayFeatures.of(source, day)
    frames = {table: read_feature_table(spark, features, table) for table in FEATURE_TABLES}
    if users:
        frames[USER_HISTORY] = frames[USER_HISTORY].orderBy("user_id").limit(users)
    tables = FeatureTables(train=frames[TRAIN], eval=frames[EVAL], user_vocab=frames[USER_VOCAB],
                           item_vocab=frames[ITEM_VOCAB], user_history=frames[USER_HISTORY],
                           user_rated=frames[USER_RATED], item_history=frames[ITEM_HISTORY], spec=features.spec)
    write_features(tables, as_lake(lake), day, {"written_by": "bench.scoring", "from_lake": as_lake(source).url,
                                                "users_kept": users})


def train_and_register(spark: SparkSession, lake: Path, day: date, epochs: int, tracking_uri: str) -> dict:
    """Train the FM on the day's training examples, evaluate it (quality gate) and register it; the registration."""
    from lakeloop.evaluation import evaluate_model
    from lakeloop.fm_trainer import FMTrainer
    from lakeloop.registry import RunLineage, git_commit, register_model

    trainer = FMTrainer(lake=str(lake), day=day.isoformat(), epochs=str(epochs))
    directory = model_dir(lake, MODEL, day)
    columns = trainer.pre_train(spark).columns  # also sets the trainer's spec, batch size and item counts
    summary = train_in_process(trainer, DayFeatures.of(lake, day).read(TRAIN, columns=columns), directory)
    write_json(directory / TRAIN_SUMMARY, summary)
    evaluate_model(lake, MODEL, day)
    end = day + timedelta(days=1)
    lineage = RunLineage("bench-scoring", "run-1", f"{day}T00:00:00+00:00", f"{end}T00:00:00+00:00",
                         str(lake / FEATURES), str(lake / PREDICTIONS), git_commit(REPO))
    return register_model(lake, MODEL, day, tracking_uri, lineage)


def prepare(spark: SparkSession, lake: Path, day: date, epochs: int, events: int | None) -> ScoringSetup:
    """A model trained on the lake's features of `day` and registered (in the store MLFLOW_TRACKING_URI names), and
    the candidates' shape."""
    registration = train_and_register(spark, lake, day, epochs, os.environ["MLFLOW_TRACKING_URI"])
    users = read_features(lake, day, USER_HISTORY, columns=["user_id"])["user_id"]
    catalog = pq.read_table(lake / MOVIES, columns=["item_id"])["item_id"]
    rated = rated_pairs(lake, day)
    rated = rated.filter(pc.and_(pc.is_in(rated["user_id"], value_set=users.combine_chunks()),
                                 pc.is_in(rated["item_id"], value_set=catalog.combine_chunks())))
    distinct = rated.group_by(["user_id", "item_id"]).aggregate([]).num_rows
    return ScoringSetup(
        lake=lake, day=day, ratings=read_feature_summary(lake, day)["rows_in"], events=events, model_name=MODEL,
        alias=registration["alias"], version=registration["version"], epochs=epochs, users=len(users),
        catalog=len(catalog), rated_pairs=distinct)


def rated_pairs(lake: Path, day: date) -> pa.Table:
    """The (user, item) pairs of the day's training and evaluation examples: the ratings of the window."""
    return pa.concat_tables([read_features(lake, day, split, columns=["user_id", "item_id"])
                             for split in (TRAIN, EVAL)])


# ---------------------------------------------------------------------------------------------------------
# The alternatives


@dataclass(frozen=True)
class InMemoryDay:
    """The limit's inputs: the job's towers of the day and, per user, the positions of the items it rated; and the
    version of `embeddings/users` that holds the user tower (the ranking stage's input)."""

    towers: DayTowers
    rated_users: np.ndarray
    rated_items: np.ndarray
    users_version: int


def in_memory_day(spark: SparkSession, setup: ScoringSetup) -> InMemoryDay:
    """The towers as the job builds them (the registered model, the day's inputs), committed to the lake as the job
    commits them, and the rated (user, item) positions, both in this process's memory (not timed)."""
    import mlflow

    local_model = mlflow.artifacts.download_artifacts(f"models:/{setup.model_name}/{setup.version}")
    model = mlflow.tensorflow.load_model(local_model)
    towers = build_day_towers(spark, setup.lake, setup.day, setup.day, FMTowers.of(model), model)
    rated = rated_pairs(setup.lake, setup.day)
    users = pc.index_in(rated["user_id"], value_set=towers.user_ids)
    items = pc.index_in(rated["item_id"], value_set=towers.item_ids)
    both = pc.and_(users.is_valid(), items.is_valid())
    committed = write_embeddings(setup.lake, setup.day, towers,
                                 {"model_name": setup.model_name, "model_version": setup.version})
    return InMemoryDay(towers, pc.filter(users, both).to_numpy(), pc.filter(items, both).to_numpy(),
                       int(committed["users_version"]))


def score_in_memory(day: InMemoryDay, k: int = TOP_K) -> tuple[Measurement, np.ndarray]:
    """(b): every user's top k by the towers in one process, blocks of `LIMIT_BLOCK` users: matmul, rated items
    masked, argpartition; the (users, k) item positions."""
    towers = day.towers
    users = len(towers.user_ids)
    order = np.argsort(day.rated_users, kind="stable")
    rated_users, rated_items = day.rated_users[order], day.rated_items[order]
    bounds = np.searchsorted(rated_users, np.arange(0, users + LIMIT_BLOCK, LIMIT_BLOCK).clip(max=users))
    lists = np.empty((users, min(k, len(towers.item_ids))), np.int64)
    started = time.monotonic()
    for block, start in enumerate(range(0, users, LIMIT_BLOCK)):
        rows = np.arange(start, min(start + LIMIT_BLOCK, users))
        scores = pair_scores(towers.constant, towers.users.take(rows), towers.items)
        masked = slice(bounds[block], bounds[block + 1])
        scores[rated_users[masked] - start, rated_items[masked]] = EXCLUDED_SCORE
        lists[rows] = top_k(scores, k)[0]
    seconds = time.monotonic() - started
    pairs = unseen_pairs(day, users)
    return Measurement(LIMIT, pairs, seconds, f"{users:,} users in blocks of {LIMIT_BLOCK:,}"), lists


def run_job(spark: SparkSession, setup: ScoringSetup) -> tuple[Measurement, dict]:
    """(a): `jobs.batch_predict.run` as the DAG's task runs it, with the registered version's alias."""
    from jobs import batch_predict

    started = time.monotonic()
    manifest = batch_predict.run(spark, setup.lake, setup.day, PredictOptions(
        model_name=setup.model_name, alias=setup.alias, top_k=TOP_K, generated_at=generated_at(setup).isoformat()))
    seconds = time.monotonic() - started
    phases = ", ".join(f"{name} {value:.2f}s" for name, value in manifest["seconds"].items())
    return Measurement(JOB, setup.candidate_pairs, seconds, f"{manifest['rows']:,} rows; {phases}"), manifest


def run_ranking_stage(spark: SparkSession, setup: ScoringSetup, day: InMemoryDay, path: Path) -> Measurement:
    """(a1): the job's `candidate_inputs` materialised to Parquet (not timed), then ranked by `top_items` in
    `mapInArrow` and counted."""
    candidate_inputs(spark, setup.lake, setup.day, day.users_version).write.mode("overwrite").parquet(str(path))
    ranking = spark.sparkContext.broadcast(ItemRanking(day.towers.constant, day.towers.item_ids, day.towers.items))
    frame = spark.read.parquet(str(path))
    started = time.monotonic()
    rows = frame.mapInArrow(top_items(ranking, TOP_K), SCORED_SCHEMA).count()
    seconds = time.monotonic() - started
    ranking.destroy()
    return Measurement(STAGE, setup.candidate_pairs, seconds, f"{rows:,} rows out")


def run_today(spark: SparkSession, setup: ScoringSetup, sample: ExhaustiveSample | None = None,
              ) -> tuple[Measurement, pa.Table]:
    """(c): the exhaustive job (bench.support.exhaustive_scoring), registry to write; of the sample's users only
    when given."""
    started = time.monotonic()
    predictions = run_exhaustive(spark, setup.lake, setup.day, setup.model_name, setup.alias, TOP_K,
                                 generated_at(setup), None if sample is None else sample.users)
    pairs, note = setup.candidate_pairs, f"{predictions.num_rows:,} rows"
    if sample is not None:
        pairs, note = sample.candidate_pairs, f"{note}; the first {len(sample.users):,} users by id only"
    return Measurement(TODAY, pairs, time.monotonic() - started, note), predictions


@dataclass(frozen=True)
class ExhaustiveSample:
    """The users the exhaustive job scores when the whole day would take hours (the first N by id), and their
    candidate pairs."""

    users: list[str]
    candidate_pairs: int

    @classmethod
    def of(cls, day: InMemoryDay, users: int) -> ExhaustiveSample:
        """The first `users` users of the day's towers (sorted by id) and their unseen (user, movie) pairs."""
        return cls(day.towers.user_ids.slice(0, users).to_pylist(), unseen_pairs(day, users))


def unseen_pairs(day: InMemoryDay, users: int) -> int:
    """The (user, movie) pairs of the day's first `users` users (by position, sorted by id) that they did not rate:
    the candidate pairs ranking them scores."""
    catalog = len(day.towers.item_ids)
    sampled = day.rated_users < users
    return users * catalog - len(np.unique(day.rated_users[sampled] * catalog + day.rated_items[sampled]))


def spark_startup() -> Measurement:
    """(s): a child process starts a local[2] session like the bench's and runs a one-row job (the session's
    fixed cost, which spark-submit pays before the job's `run`)."""
    code = ("import time; t = time.monotonic(); from bench.harness import start_spark; "
            f"s = start_spark('startup probe', conf={JOB_SPARK_CONF!r}); "
            "s.range(1).mapInArrow(lambda batches: batches, 'id long').count(); print(time.monotonic() - t); s.stop()")
    output = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}).stdout
    return Measurement(STARTUP, 1, float(output.strip().splitlines()[-1]),
                       "python + JVM + first job, its Python worker started")


def generated_at(setup: ScoringSetup) -> datetime:
    """The rows' timestamp: the end of the day, as the DAG stamps it."""
    return datetime.combine(setup.day + timedelta(days=1), datetime.min.time(), UTC)


# ---------------------------------------------------------------------------------------------------------
# The output check


def check_lists(predictions: pa.Table, exhaustive: pa.Table, users: list[str] | None = None) -> ListCheck:
    """Compare the job's predictions with the exhaustive job's, user by user (of `users` only, when given)."""
    if users is not None:
        predictions = predictions.filter(pc.is_in(predictions["user_id"], value_set=pa.array(users)))
    def lists(table: pa.Table) -> dict[str, list[str]]:
        ranked = table.sort_by([("user_id", "ascending"), ("rank", "ascending")])
        result: dict[str, list[str]] = {}
        for user, item in zip(ranked["user_id"].to_pylist(), ranked["item_id"].to_pylist(), strict=True):
            result.setdefault(user, []).append(item)
        return result

    ours, theirs = lists(predictions), lists(exhaustive)
    both = predictions.select(["user_id", "item_id", "score"]).join(
        exhaustive.select(["user_id", "item_id", "score"]).rename_columns(["user_id", "item_id", "expected"]),
        ["user_id", "item_id"])
    difference = pc.max(pc.abs(pc.subtract(both["score"], both["expected"]))).as_py()
    return ListCheck(users=len(ours), expected_users=len(theirs),
                     users_identical=sum(1 for user, items in theirs.items() if ours.get(user) == items),
                     max_score_difference=float("inf") if difference is None else difference)


# ---------------------------------------------------------------------------------------------------------
# The run and the report


def run_benchmark(spark: SparkSession, lake: Path, day: date, workdir: Path, epochs: int = 1, repeat: int = 1,
                  events: int | None = None, exhaustive_users: int | None = None,
                  features_from: Path | None = None) -> ScoringResults:
    """Prepare the model of the lake's features of `day`, then time the job, its ranking stage and the
    limit `repeat` times, interleaved (the order reverses every other round), the exhaustive job (on the first
    `exhaustive_users` users only, when given) and Spark's start-up once; check the job's lists against the
    exhaustive job's. Prints progress as it goes. `features_from` names where the day's features were copied from."""
    load_at_start = os.getloadavg()
    setup = prepare(spark, lake, day, epochs, events)
    print(f"prepared {setup.ratings:,} ratings, {setup.users:,} users × {setup.catalog:,} movies, "
          f"{setup.candidate_pairs:,} candidate pairs; model version {setup.version} (alias {setup.alias})",
          flush=True)
    memory = in_memory_day(spark, setup)
    sample = (ExhaustiveSample.of(memory, exhaustive_users)
              if exhaustive_users is not None and exhaustive_users < setup.users else None)
    rounds: dict[str, list[Measurement]] = {key: [] for key in ORDER}
    manifests: list[dict] = []

    def record(timing: Measurement) -> Measurement:
        rounds[timing.name].append(timing)
        print(f"  {timing.name}: {timing.rows:,} pairs in {timing.seconds:.2f}s, {timing.rows_per_second:,.0f}/s "
              f"{timing.note}", flush=True)
        return timing

    def job() -> None:
        timing, manifest = run_job(spark, setup)
        manifests.append(manifest)
        record(timing)
        slots = manifest["task_slots"]
        record(Measurement(WORKERS, setup.candidate_pairs, manifest["seconds"]["in_workers"] / slots,
                           f"{manifest['seconds']['in_workers']:.2f} worker-seconds over {slots} task slots"))

    def today() -> None:
        timing, predictions = run_today(spark, setup, sample)
        exhaustive.append(predictions)
        record(timing)

    exhaustive: list[pa.Table] = []
    record(spark_startup())
    for round_index in range(repeat):
        print(f"round {round_index + 1} of {repeat}", flush=True)
        steps: list[Callable[[], object]] = [
            job,
            lambda: record(run_ranking_stage(spark, setup, memory, workdir / "candidates")),
            lambda: record(score_in_memory(memory)[0]),
        ]
        for step in round_order(steps, round_index):
            step()
        if round_index == 0:  # once: at 1M events it takes minutes
            today()
    check = check_lists(read_partition(as_lake(setup.lake), PREDICTIONS, setup.day), exhaustive[0],
                        None if sample is None else sample.users)
    print(check.describe(TOP_K), flush=True)
    best = {key: best_of(timings) for key, timings in rounds.items()}
    fastest = min(range(len(manifests)), key=lambda index: rounds[JOB][index].seconds)
    return ScoringResults(setup=setup, repeat=repeat, best=best, rounds=rounds, check=check,
                          job_seconds=manifests[fastest]["seconds"],
                          load_averages=(load_at_start, os.getloadavg()), features_from=features_from)


def markdown_report(results: ScoringResults) -> str:
    """The table, the ratios, where (a)'s time goes, the output check and the machine, in markdown."""
    setup, best = results.setup, results.best
    rounds = f"best of {results.repeat} interleaved rounds" if results.repeat > 1 else "one round"
    source = (f"a synthetic day of {setup.events:,} events" if setup.events
              else f"the copied features of {results.features_from}" if results.features_from
              else f"{setup.ratings:,} ratings replayed")
    lines = [
        f"### Batch scoring: {setup.candidate_pairs:,} candidate pairs ({setup.users:,} users × {setup.catalog:,} "
        f"movies − {setup.rated_pairs:,} rated), top {TOP_K} per user, local[2], {rounds} ((c) and (s): one)",
        "",
        f"Model `{setup.model_name}` version {setup.version} (alias `{setup.alias}`): the FM with default "
        f"hyper-parameters, trained {setup.epochs} epoch(s) by the project's trainer on {source} "
        f"({setup.ratings:,} ratings in the day's features).",
        "",
        *table_header(["alternative", "pairs", "seconds", "pairs/s", "vs (b)", "note"], "lrrrrl"),
    ]
    for key in ORDER:
        timing = best[key]
        startup = key == STARTUP
        lines.append(table_row([NAMES[key], "–" if startup else f"{timing.rows:,}", f"{timing.seconds:.2f}",
                                "–" if startup else f"{timing.rows_per_second:,.0f}",
                                "–" if startup else f"{results.ratio(key):.2f}×", timing.note]))
    job = best[JOB].seconds
    phases = {name: value for name, value in results.job_seconds.items() if name != "in_workers"}
    lines += [
        "",
        f"- (a) / (b): {results.ratio(JOB):.3f}×; (a1) / (b): {results.ratio(STAGE):.3f}×; "
        f"(a) / (c): {results.ratio(JOB, TODAY):.1f}× faster than the exhaustive job",
        f"- (a)'s {job:.2f}s: model load and towers {phases['model_and_towers']:.2f}s, embeddings written and "
        f"logged {phases['embeddings']:.2f}s, ranking (candidates, `mapInArrow`, sort, collect) "
        f"{phases['ranking']:.2f}s (of which the workers' own ranking {results.job_seconds['in_workers']:.2f} "
        f"worker-seconds), the rest (registry lookup, download, write) "
        f"{job - sum(phases.values()):.2f}s",
        f"- {results.check.describe(TOP_K)}",
        f"- machine: {os.cpu_count()} cores, shared; load average {results.load_averages[0][0]:.1f} at the start, "
        f"{results.load_averages[1][0]:.1f} at the end",
    ]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    """The command line."""
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("--events", type=int, help="a synthetic day of N events (bench.support.synthetic_events, as "
                                                 "the e2e bench's days) instead of MovieLens replayed")
    args.add_argument("--ratings", type=int, help="use the first N MovieLens ratings in user order (default: all; "
                                                  "--quick 3,000)")
    args.add_argument("--epochs", type=int, default=1, help="FM training epochs (training is not measured)")
    args.add_argument("--repeat", type=int, help="interleaved rounds, best kept (default 3; --quick 1)")
    args.add_argument("--workdir", type=Path, help="where the lake and MLflow store go (default: a temp dir, removed)")
    args.add_argument("--features-from", type=Path, metavar="LAKE",
                      help="copy the catalog and the --day features of LAKE instead of building them")
    args.add_argument("--day", type=date.fromisoformat, default=END_DAY, help="the day of --features-from")
    args.add_argument("--exhaustive-users", type=int, metavar="N",
                      help="run the exhaustive job (c) on the first N users by id only (default: all; at 10M events "
                           "all takes hours); the lists are checked for those users")
    args.add_argument("--users", type=int, help="score only the first N users (by id) of the window (default: all)")
    args.add_argument("--quick", action="store_true", help="smoke run: 3,000 ratings, one round")
    return args


def main(argv: list[str] | None = None, spark: SparkSession | None = None) -> ScoringResults:
    """Run the benchmark (on `spark` if given, else on its own local[2] session), print the markdown report and,
    last, the figures as one JSON line."""
    from lakeloop.config import load_settings
    from lakeloop.movielens import load_movielens

    options = parser().parse_args(argv)
    local_environment()
    day = options.day if options.features_from else END_DAY
    own_session = spark is None
    spark = start_spark("lakeloop scoring benchmark", conf=JOB_SPARK_CONF) if own_session else spark
    previous_uri = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with work_directory(options.workdir, "lakeloop-scoring-") as workdir:
            lake = workdir / "lake"
            os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir.resolve() / 'mlflow.db'}"
            movielens = None if options.features_from else load_movielens(load_settings().dataset_dir)
            if options.features_from:
                copy_features(spark, options.features_from, lake, day, options.users)
            else:
                if options.events:
                    build_synthetic_lake(spark, movielens, lake, options.events)
                else:
                    build_replayed_lake(spark, ratings_slice(movielens, options.ratings or (3_000 if options.quick
                                                                                            else None)), lake)
                if options.users:
                    commit_features(spark, lake, lake, day, options.users)
            repeat = options.repeat or (1 if options.quick else 3)
            results = run_benchmark(spark, lake, day, workdir, options.epochs, repeat, options.events,
                                    options.exhaustive_users, options.features_from)
    finally:
        if previous_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_uri
        if own_session:
            spark.stop()
    print("\n" + markdown_report(results), flush=True)
    print_json_line(results.summary())
    return results


if __name__ == "__main__":
    main()
