"""Batch scoring: the batch prediction job's pairs/s against its own scoring stage and against scoring the same
pairs in one plain Python process (the limit), on a model trained and registered as the daily loop would.

    .venv/bin/python -m bench.scoring --quick              # a smoke run: 3,000 ratings, one round

See docs/performance.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench.harness import (
    REPO,
    Measurement,
    best_of,
    local_environment,
    round_order,
    start_spark,
    table_header,
    table_row,
    work_directory,
)
from bench.support.fm_training import train_in_process
from bench.support.movielens_lake import END_DAY, replay_to_lake, time_split_features
from jobs.batch_predict import (
    PREDICTIONS,
    SCORED_SCHEMA,
    PredictOptions,
    candidate_inputs,
    load_scoring_model,
    score_batches,
)
from lakeloop.features import (
    EVAL,
    FEATURE_COLUMNS,
    FEATURES,
    TRAIN,
    USER_HISTORY,
    feature_partition,
    feature_table_path,
    model_inputs,
    read_feature_manifest,
)
from lakeloop.lake import MANIFEST_NAME, Lake, partition_path
from lakeloop.models import TRAIN_SUMMARY, model_dir, write_json
from lakeloop.names import MOVIES

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from lakeloop.movielens import MovieLens

MODEL = "scoring-bench-fm"
TOP_K = 10
PREDICT_BATCH_SIZE = 8192
SCORE_TOLERANCE = 1e-5
JOB, STAGE, LIMIT = "(a)", "(b)", "(c)"
CANDIDATES, STAGE_FIXED, JOB_FUNCTION = "candidates", "(b0)", "(c')"
NAMES = {
    JOB: "(a) `batch_predict.run`, the whole job: candidates, scoring (`mapInArrow`), top 10, atomic write",
    STAGE: "(b) the job's scoring stage alone: materialised inputs → `mapInArrow(score_batches)` → count",
    LIMIT: "(c) one Python process: pyarrow → `model_inputs` → `model.predict(batch_size=8192)` (the limit)",
    CANDIDATES: "for information: the candidates' inputs built by Spark and written to Parquet",
    STAGE_FIXED: "for information: (b0) the scoring stage on 2 rows (its fixed cost)",
    JOB_FUNCTION: "for information: (c') the job's `score_batches` in this process on Spark-sized Arrow batches",
}
ORDER = [JOB, STAGE, LIMIT, CANDIDATES, STAGE_FIXED, JOB_FUNCTION]


@dataclass(frozen=True)
class ScoringSetup:
    """The day's lake and registered model the alternatives score with, and the candidates' shape."""

    lake: Path
    day: date
    ratings: int
    model_name: str
    alias: str
    version: str
    local_model: str
    epochs: int
    users: int
    catalog: int
    rated_pairs: int


@dataclass(frozen=True)
class TopKCheck:
    """How (a)'s predictions compare with the top-k of (c)'s scores over the same candidate pairs.

    A user's list is valid when it has min(k, candidates) rows, every one a candidate pair whose (c)-score is
    within the tolerance of (a)'s and not below (c)'s k-th best score minus the tolerance (near-ties may swap);
    identical when it names the same items in the same order as (c)'s own top k (ties to the smaller item id).
    """

    users: int
    expected_users: int
    rows: int
    expected_rows: int
    users_valid: int
    users_identical: int
    unknown_pairs: int
    max_score_difference: float

    @property
    def passed(self) -> bool:
        """Whether (a)'s output is the candidates' top k, up to the tolerance."""
        return (self.users == self.expected_users == self.users_valid and self.rows == self.expected_rows
                and self.unknown_pairs == 0 and self.max_score_difference <= SCORE_TOLERANCE)

    def describe(self, k: int) -> str:
        """One line for the report."""
        return (f"(a)'s predictions: {self.rows:,} rows for {self.users:,} users; the top {k} of (c)'s scores over "
                f"the candidate pairs: {self.expected_rows:,} rows for {self.expected_users:,} users. Valid top-{k} "
                f"lists (within {SCORE_TOLERANCE:g}) for {self.users_valid:,} users, identical for "
                f"{self.users_identical:,}; pairs not among the candidates: {self.unknown_pairs:,}; largest score "
                f"difference {self.max_score_difference:.2g} — {'passed' if self.passed else 'FAILED'}")


@dataclass
class ScoringResults:
    """Every figure of one run: the best round of each alternative, each round's ratios, the output check."""

    setup: ScoringSetup
    candidate_pairs: int
    repeat: int
    best: dict[str, Measurement]
    rounds: dict[str, list[Measurement]]
    top_k: TopKCheck
    load_averages: tuple[tuple[float, ...], tuple[float, ...]]

    def ratio(self, key: str, round_index: int | None = None) -> float:
        """Pairs/s of `key` over pairs/s of (c), for the best rounds or one round."""
        if round_index is None:
            return self.best[key].rows_per_second / self.best[LIMIT].rows_per_second
        return self.rounds[key][round_index].rows_per_second / self.rounds[LIMIT][round_index].rows_per_second


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


def build_lake(spark: SparkSession, movielens: MovieLens, lake: Path) -> None:
    """The catalog, `movielens` replayed as `END_DAY`'s raw partition, and the ETL and features jobs run on it."""
    replay_to_lake(movielens, lake, 1, END_DAY)
    time_split_features(spark, lake, 1)


def copy_features(source: Path, lake: Path, day: date) -> None:
    """The catalog and the day's feature partition of another lake, copied: the benchmark never writes there."""
    shutil.copytree(source / MOVIES, lake / MOVIES)
    shutil.copytree(feature_partition(source, day), feature_partition(lake, day))


def keep_users(lake: Path, day: date, users: int) -> None:
    """Keep the first `users` users (by id) of the day's user history, the users batch prediction scores
    (the partition's manifest lists the one file left, as readers go by it)."""
    path = feature_table_path(lake, day, USER_HISTORY)
    kept = pq.read_table(path).sort_by("user_id").slice(0, users)
    shutil.rmtree(path)
    path.mkdir()
    pq.write_table(kept, path / "part-0.parquet")
    features = Lake.from_url(str(lake))
    manifest = features.read_manifest(FEATURES, day)
    others = [entry for entry in manifest["files"] if not entry["name"].startswith(f"{USER_HISTORY}/")]
    manifest["files"] = [*others, {"name": f"{USER_HISTORY}/part-0.parquet", "rows": kept.num_rows}]
    features.write_json(f"{features.partition(FEATURES, day)}/{MANIFEST_NAME}", manifest)


def train_and_register(spark: SparkSession, lake: Path, day: date, epochs: int, tracking_uri: str) -> dict:
    """Train the FM on the day's training examples, evaluate it (quality gate) and register it; the registration."""
    from lakeloop.evaluation import evaluate_model
    from lakeloop.fm_trainer import FMTrainer
    from lakeloop.registry import RunLineage, git_commit, register_model

    trainer = FMTrainer(lake=str(lake), day=day.isoformat(), epochs=str(epochs))
    directory = model_dir(lake, MODEL, day)
    summary = train_in_process(trainer, trainer.pre_train(spark).toArrow(), directory)
    write_json(directory / TRAIN_SUMMARY, summary)
    evaluate_model(lake, MODEL, day)
    end = day + timedelta(days=1)
    lineage = RunLineage("bench-scoring", "run-1", f"{day}T00:00:00+00:00", f"{end}T00:00:00+00:00",
                         str(feature_partition(lake, day)), str(partition_path(lake, PREDICTIONS, day)),
                         git_commit(REPO))
    return register_model(lake, MODEL, day, tracking_uri, lineage)


def prepare(spark: SparkSession, lake: Path, day: date, workdir: Path, epochs: int) -> ScoringSetup:
    """A model trained on the lake's feature partition of `day`, registered (in the store MLFLOW_TRACKING_URI
    names) and downloaded as the job downloads it."""
    import mlflow

    registration = train_and_register(spark, lake, day, epochs, os.environ["MLFLOW_TRACKING_URI"])
    local_model = mlflow.artifacts.download_artifacts(registration["model_uri"],
                                                      dst_path=str(workdir / "downloaded-model"))
    users = pq.read_table(feature_table_path(lake, day, USER_HISTORY), columns=["user_id"])["user_id"]
    rated = sum(pc.sum(pc.is_in(pq.read_table(feature_table_path(lake, day, split), columns=["user_id"])["user_id"],
                                value_set=users.combine_chunks())).as_py() or 0 for split in (TRAIN, EVAL))
    return ScoringSetup(
        lake=lake, day=day, ratings=read_feature_manifest(lake, day)["rows_in"], model_name=MODEL,
        alias=registration["alias"], version=registration["version"], local_model=local_model, epochs=epochs,
        users=len(users), catalog=pq.read_table(lake / MOVIES, columns=["item_id"]).num_rows, rated_pairs=rated)


# ---------------------------------------------------------------------------------------------------------
# The alternatives


def materialise_candidates(spark: SparkSession, setup: ScoringSetup, path: Path) -> Measurement:
    """Build the candidates' inputs as the job does (one partition per task slot) and write them to `path`."""
    started = time.monotonic()
    (candidate_inputs(spark, setup.lake, setup.day, setup.day).repartition(spark.sparkContext.defaultParallelism)
     .write.mode("overwrite").parquet(str(path)))
    seconds = time.monotonic() - started
    return Measurement(CANDIDATES, pq.read_table(path, columns=["user_id"]).num_rows, seconds)


def run_job(spark: SparkSession, setup: ScoringSetup, candidate_pairs: int) -> Measurement:
    """(a): `jobs.batch_predict.run` as the DAG's task runs it, with the registered version's alias."""
    from jobs import batch_predict

    options = PredictOptions(model_name=setup.model_name, alias=setup.alias, top_k=TOP_K,
                             generated_at=f"{setup.day + timedelta(days=1)}T00:00:00+00:00")
    started = time.monotonic()
    manifest = batch_predict.run(spark, setup.lake, setup.day, options)
    seconds = time.monotonic() - started
    return Measurement(JOB, candidate_pairs, seconds,
                       f"{manifest['rows']:,} predictions written; model loaded {manifest['model_loads']}×")


def run_scoring_stage(frame: DataFrame, local_model: str, key: str = STAGE) -> Measurement:
    """(b) or (b0): `frame`'s rows scored by the job's `score_batches` in `mapInArrow`, counted."""
    tasks = frame.rdd.getNumPartitions()
    started = time.monotonic()
    rows = frame.mapInArrow(score_batches(local_model), SCORED_SCHEMA).count()
    return Measurement(key, rows, time.monotonic() - started, f"{tasks} task{'s' if tasks > 1 else ''}")


def score_in_process(model: Any, path: Path) -> tuple[Measurement, np.ndarray]:
    """(c): pyarrow reads the candidates' inputs, `model_inputs` makes numpy arrays, `model.predict` scores them."""
    started = time.monotonic()
    inputs = model_inputs(pq.read_table(path, columns=FEATURE_COLUMNS))
    read = time.monotonic() - started
    scores = np.asarray(model.predict(inputs, batch_size=PREDICT_BATCH_SIZE, verbose=0)).reshape(-1)
    seconds = time.monotonic() - started
    return Measurement(LIMIT, len(scores), seconds, f"read {read:.2f}s + predict {seconds - read:.2f}s"), scores


def score_arrow_batches(name: str, path: Path, batch_rows: int,
                        scorer: Callable[[Iterator[pa.RecordBatch]], Iterator[int]]) -> Measurement:
    """(c'): the Parquet's rows in Arrow batches of `batch_rows`, scored in this process by `scorer`
    (batches → rows scored per batch)."""
    started = time.monotonic()
    batches = pq.read_table(path).to_batches(max_chunksize=batch_rows)
    rows = sum(scorer(iter(batches)))
    return Measurement(name, rows, time.monotonic() - started, f"{len(batches)} batches of ≤ {batch_rows:,} rows")


def job_function_scorer(local_model: str) -> Callable[[Iterator[pa.RecordBatch]], Iterator[int]]:
    """(c'): the job's own `score_batches`, as a Python worker runs it."""
    return lambda batches: (scored.num_rows for scored in score_batches(local_model)(batches))


# ---------------------------------------------------------------------------------------------------------
# The output check


def check_top_k(predictions: pa.Table, candidates: pa.Table, scores: np.ndarray, k: int = TOP_K) -> TopKCheck:
    """Compare (a)'s predictions with the top k of `scores` (c's, aligned with `candidates`' user/item ids)."""
    ranked = (candidates.select(["user_id", "item_id"]).append_column("limit_score", pa.array(scores, pa.float64()))
              .sort_by([("user_id", "ascending"), ("limit_score", "descending"), ("item_id", "ascending")]))
    users = ranked["user_id"].to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    sizes = np.diff(np.r_[starts, len(users)])
    rank = np.arange(len(users)) - np.repeat(starts, sizes) + 1
    ranked = ranked.append_column("limit_rank", pa.array(rank, pa.int64()))
    kept = np.minimum(sizes, k)
    thresholds = pa.table({"user_id": pa.array(users[starts]),
                           "threshold": pa.array(ranked["limit_score"].to_numpy()[starts + kept - 1]),
                           "expected": pa.array(kept, pa.int64())})
    joined = (predictions.select(["user_id", "item_id", "score", "rank"])
              .join(ranked, ["user_id", "item_id"], join_type="left outer")
              .join(thresholds, "user_id", join_type="left outer"))
    difference = pc.abs(pc.subtract(joined["score"], joined["limit_score"]))
    valid_row = pc.fill_null(pc.and_(pc.less_equal(difference, SCORE_TOLERANCE),
                                     pc.greater_equal(joined["limit_score"],
                                                      pc.subtract(joined["threshold"], SCORE_TOLERANCE))), False)
    identical_row = pc.fill_null(pc.equal(pc.cast(joined["rank"], pa.int64()), joined["limit_rank"]), False)
    per_user = (joined.append_column("valid_row", valid_row).append_column("identical_row", identical_row)
                .group_by("user_id").aggregate([("valid_row", "all"), ("identical_row", "all"), ("rank", "count"),
                                                ("expected", "max")]))
    complete = pc.equal(per_user["rank_count"], per_user["expected_max"])
    max_difference = pc.max(difference).as_py()
    return TopKCheck(
        users=per_user.num_rows, expected_users=len(starts), rows=predictions.num_rows, expected_rows=int(kept.sum()),
        users_valid=pc.sum(pc.and_(per_user["valid_row_all"], complete)).as_py() or 0,
        users_identical=pc.sum(pc.and_(per_user["identical_row_all"], complete)).as_py() or 0,
        unknown_pairs=joined["limit_score"].null_count,
        max_score_difference=float("inf") if max_difference is None else max_difference)


# ---------------------------------------------------------------------------------------------------------
# The run and the report


def measure_round(spark: SparkSession, setup: ScoringSetup, model: Any, path: Path, pairs: int, batch_rows: int,
                  round_index: int) -> Iterator[Measurement]:
    """One round of every alternative on the candidates materialised at `path`, in reverse order every other round."""
    steps: list[Callable[[], Measurement]] = [
        lambda: run_job(spark, setup, pairs),
        lambda: run_scoring_stage(spark.read.parquet(str(path)), setup.local_model),
        lambda: run_scoring_stage(spark.read.parquet(str(path)).limit(2).repartition(2), setup.local_model,
                                  STAGE_FIXED),
        lambda: score_in_process(model, path)[0],
        lambda: score_arrow_batches(JOB_FUNCTION, path, batch_rows, job_function_scorer(setup.local_model)),
    ]
    for step in round_order(steps, round_index):
        yield step()


def run_benchmark(spark: SparkSession, lake: Path, day: date, workdir: Path, epochs: int = 1,
                  repeat: int = 1) -> ScoringResults:
    """Prepare the model of the lake's feature partition of `day`, then time every alternative `repeat` times,
    interleaved (the order reverses every other round), and check (a)'s output against (c)'s scores. Prints
    progress as it goes."""
    load_at_start = os.getloadavg()
    setup = prepare(spark, lake, day, workdir, epochs)
    print(f"prepared {setup.ratings:,} ratings, {setup.users:,} users, model version {setup.version} "
          f"(alias {setup.alias})", flush=True)
    model = load_scoring_model(setup.local_model)  # the job's own loader: the model its workers score with
    batch_rows = int(spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch", "10000"))
    rounds: dict[str, list[Measurement]] = {key: [] for key in ORDER}

    def record(timing: Measurement) -> Measurement:
        rounds[timing.name].append(timing)
        print(f"  {timing.name}: {timing.rows:,} pairs in {timing.seconds:.2f}s, {timing.rows_per_second:,.0f}/s "
              f"{timing.note}", flush=True)
        return timing

    path = None
    for round_index in range(repeat):
        print(f"round {round_index + 1} of {repeat}", flush=True)
        previous, path = path, workdir / f"candidates-{round_index}"
        pairs = record(materialise_candidates(spark, setup, path)).rows
        if previous is not None:
            shutil.rmtree(previous)
        if round_index == 0:
            warm_up = pq.read_table(path).slice(0, 2)
            model.predict(model_inputs(warm_up), verbose=0)
            list(score_batches(setup.local_model)(iter(warm_up.to_batches())))
        for timing in measure_round(spark, setup, model, path, pairs, batch_rows, round_index):
            record(timing)
    _, scores = score_in_process(model, path)
    check = check_top_k(pq.read_table(partition_path(setup.lake, PREDICTIONS, setup.day)),
                        pq.read_table(path, columns=["user_id", "item_id"]), scores)
    print(check.describe(TOP_K), flush=True)
    best = {key: best_of(timings) for key, timings in rounds.items()}
    fixed = rounds[STAGE_FIXED]  # 2 rows: its spread in seconds says more than in rows/s
    best[STAGE_FIXED] = dataclasses.replace(best[STAGE_FIXED], note=f"{fixed[0].note}; rounds "
                                            + ", ".join(f"{timing.seconds:.2f}s" for timing in fixed))
    return ScoringResults(setup=setup, candidate_pairs=rounds[CANDIDATES][-1].rows, repeat=repeat, best=best,
                          rounds=rounds, top_k=check, load_averages=(load_at_start, os.getloadavg()))


def ratio_line(results: ScoringResults, key: str) -> str:
    """The ratio of `key` to (c), best of each, with each round's own ratio and their median."""
    per_round = [results.ratio(key, index) for index in range(results.repeat)]
    line = f"- {key} / (c): {results.ratio(key):.2f}×"
    if results.repeat > 1:
        line += (f" best of each; per round {', '.join(f'{value:.2f}×' for value in per_round)} "
                 f"(median {statistics.median(per_round):.2f}×)")
    return line


def markdown_report(results: ScoringResults) -> str:
    """The table, the ratios, where (a)'s time goes, the output check and the machine, in markdown."""
    setup, best = results.setup, results.best
    rounds = f"best of {results.repeat} interleaved rounds" if results.repeat > 1 else "one round"
    lines = [
        f"### Batch scoring: {results.candidate_pairs:,} candidate pairs ({setup.users:,} users × {setup.catalog:,} "
        f"movies − {setup.rated_pairs:,} rated), top {TOP_K} per user, local[2], {rounds}",
        "",
        f"Model `{setup.model_name}` version {setup.version} (alias `{setup.alias}`): the FM with default "
        f"hyper-parameters, trained {setup.epochs} epoch(s) by the project's trainer on the day's training "
        f"examples ({setup.ratings:,} ratings replayed as one day).",
        "",
        *table_header(["alternative", "pairs", "seconds", "pairs/s", "vs (c)", "note"], "lrrrrl"),
    ]
    for key in ORDER:
        timing = best[key]
        fixed = key == STAGE_FIXED
        rate = "–" if fixed else f"{timing.rows_per_second:,.0f}"
        ratio = "–" if fixed else f"{results.ratio(key):.2f}×"
        lines.append(table_row([NAMES[key], f"{timing.rows:,}", f"{timing.seconds:.2f}", rate, ratio, timing.note]))
    job, stage = best[JOB].seconds, best[STAGE].seconds
    lines += [
        "",
        ratio_line(results, JOB),
        ratio_line(results, STAGE),
        f"- (a)'s time: scoring stage (b) {stage:.2f}s ({stage / job:.0%}), of which fixed cost (b0) "
        f"{best[STAGE_FIXED].seconds:.2f}s; the rest {job - stage:.2f}s ({1 - stage / job:.0%}): MLflow lookup and "
        f"download, candidates' inputs, shuffle, top {TOP_K}, write",
        f"- {results.top_k.describe(TOP_K)}",
        f"- machine: {os.cpu_count()} cores, shared; load average {results.load_averages[0][0]:.1f} at the start, "
        f"{results.load_averages[1][0]:.1f} at the end; nice {os.nice(0)}",
    ]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    """The command line."""
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("--ratings", type=int, help="use the first N ratings in user order (default: all; --quick 3,000)")
    args.add_argument("--epochs", type=int, default=1, help="FM training epochs (training is not measured)")
    args.add_argument("--repeat", type=int, help="interleaved rounds, best kept (default 3; --quick 1)")
    args.add_argument("--workdir", type=Path, help="where the lake and MLflow store go (default: a temp dir, removed)")
    args.add_argument("--features-from", type=Path, metavar="LAKE",
                      help="copy the catalog and the --day feature partition of LAKE instead of building them")
    args.add_argument("--day", type=date.fromisoformat, default=END_DAY, help="the day of --features-from")
    args.add_argument("--users", type=int, help="score only the first N users (by id) of the window (default: all)")
    args.add_argument("--quick", action="store_true", help="smoke run: 3,000 ratings, one round")
    return args


def main(argv: list[str] | None = None, spark: SparkSession | None = None) -> ScoringResults:
    """Run the benchmark (on `spark` if given, else on its own local[2] session) and print the markdown report."""
    from lakeloop.config import load_settings
    from lakeloop.movielens import load_movielens

    options = parser().parse_args(argv)
    local_environment()
    day = options.day if options.features_from else END_DAY
    own_session = spark is None
    spark = start_spark("lakeloop scoring benchmark") if own_session else spark
    previous_uri = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with work_directory(options.workdir, "lakeloop-scoring-") as workdir:
            lake = workdir / "lake"
            os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir.resolve() / 'mlflow.db'}"
            if options.features_from:
                copy_features(options.features_from, lake, day)
            else:
                build_lake(spark, ratings_slice(load_movielens(load_settings().dataset_dir),
                                                options.ratings or (3_000 if options.quick else None)), lake)
            if options.users:
                keep_users(lake, day, options.users)
            repeat = options.repeat or (1 if options.quick else 3)
            results = run_benchmark(spark, lake, day, workdir, options.epochs, repeat)
    finally:
        if previous_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_uri
        if own_session:
            spark.stop()
    print("\n" + markdown_report(results), flush=True)
    return results


if __name__ == "__main__":
    main()
