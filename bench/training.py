"""The training limit side by side (issue 19): the production FM trained on one synthetic day's feature partition
(L) in one process on numpy arrays with a plain `tf.function` step, (J1) by the tfspark job with one worker, (J2) by
the tfspark job as the DAG runs it, and (J0) by the job with the recipe the DAG ran until issue 19; examples/s,
seconds and RMSE against the bias baseline, a batch-size table of (L), and as the last line one JSON object.

    make bench-training EVENTS=200000
    .venv/bin/python -m bench.training --events 20000 --epochs 1   # a smoke run

See docs/performance.md (Training).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.harness import git_head, markdown_table, parse_sizes, print_json_line, start_spark
from bench.support.in_memory_fit import FEEDS, InMemoryExamples, LimitRun, train_in_memory
from bench.support.training_partition import TrainingPartition, build_cached_partition, ready_partition
from lakeloop.config import PROJECT_DIR

if TYPE_CHECKING:
    import numpy as np

    from lakeloop.fm_trainer import FMTrainer

DEFAULT_EVENTS = 1_000_000
CACHE_DIR = PROJECT_DIR / "var" / "bench-training"
TRAINER = "lakeloop.fm_trainer:FMTrainer"
MODEL_NAME = "bench-training"
TABLE_BATCH_SIZES = "256,1024,4096,16384"
# The recipe the DAG trained with until issue 19: global batch 256, Adam at 0.002, from scratch, two workers.
TODAY_BATCH_SIZE = 256
TODAY_LEARNING_RATE = 0.002
TODAY_WORKERS = "2"
TARGET_RATIO = 0.7
TARGET_RMSE_GAP = 0.005
TARGET_SPEEDUP = 5.0
STEP_LOG = re.compile(r"rank 0 step (\d+)/\d+ epoch \S+ loss \S+ examples/s (\d+)")


@dataclass(frozen=True)
class Run:
    """One way of training the FM: examples trained, the seconds they took (`seconds_source` says which), the
    wall seconds of the whole job (None in this process), the model's evaluation RMSE and the load meanwhile."""

    key: str
    description: str
    batch_size: int
    recipe: str
    examples: int
    seconds: float
    seconds_source: str
    rmse: float
    wall_seconds: float | None = None
    log_seconds: float | None = None
    load: tuple[float, float] = (0.0, 0.0)
    feed: str | None = None

    @property
    def examples_per_second(self) -> float:
        """Examples trained per second (of `seconds_source`)."""
        return self.examples / self.seconds

    @property
    def log_examples_per_second(self) -> float | None:
        """Examples per second of the job's training loop, from its step log lines (None without them)."""
        return self.examples / self.log_seconds if self.log_seconds else None


@dataclass(frozen=True)
class EvaluationSet:
    """The partition's evaluation inputs and labels, and the bias baseline's RMSE on them."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray
    bias_rmse: float

    @classmethod
    def of(cls, partition: TrainingPartition) -> EvaluationSet:
        """Read the evaluation examples and fit `lakeloop.evaluation.BiasBaseline` on the training examples."""
        from datetime import date

        import numpy as np

        from lakeloop.evaluation import BiasBaseline
        from lakeloop.features import EVAL, LABEL, TRAIN, model_inputs, read_features
        from lakeloop.metrics import rmse

        day = date.fromisoformat(partition.day_iso)
        evaluation = read_features(partition.lake, day, EVAL)
        train = read_features(partition.lake, day, TRAIN, columns=["user_idx", "item_idx", LABEL])
        inputs = model_inputs(evaluation)
        labels = evaluation[LABEL].to_numpy().astype(np.float64)
        bias = BiasBaseline.fit(train["user_idx"].to_numpy(), train["item_idx"].to_numpy(),
                                train[LABEL].to_numpy().astype(np.float64))
        return cls(inputs, labels, rmse(bias.predict(inputs["user_idx"], inputs["item_idx"]), labels))

    def model_rmse(self, model_path: Path) -> float:
        """The RMSE of a saved model (`model.keras`) on the evaluation examples, scored as the evaluation task does."""
        import keras

        from lakeloop.evaluation import keras_scorer
        from lakeloop.metrics import rmse

        model = keras.saving.load_model(model_path)
        return rmse(keras_scorer(model)(self.inputs, None, None), self.labels)


def today_recipe() -> dict[str, str]:
    """Trainer args of the recipe the DAG ran until issue 19 on top of today's `FMHyperParameters`: batch 256,
    learning rate 0.002, no warm start, no warm-up, no decay and no step budget where the hyper-parameters have them."""
    from lakeloop.fm_model import FMHyperParameters

    names = {option.name for option in dataclasses.fields(FMHyperParameters)}
    recipe = {"batch_size": str(TODAY_BATCH_SIZE), "learning_rate": str(TODAY_LEARNING_RATE)}
    if "warm_start" in names:
        recipe["warm_start"] = "none"
    if "learning_rate_decay" in names:
        recipe["learning_rate_decay"] = "none"
    recipe.update({name: "0" for name in names if "warmup" in name or "warm_up" in name or name == "step_budget"})
    return recipe


def trainer_args(partition: TrainingPartition, overrides: dict[str, str]) -> dict[str, str]:
    """The FM trainer's arguments for the partition, with `model_name` if the trainer takes one."""
    from lakeloop.fm_trainer import FMTrainer

    args = {"lake": str(partition.lake), "day": partition.day_iso, **overrides}
    try:
        FMTrainer(**args, model_name=MODEL_NAME)
    except (TypeError, ValueError):
        return args
    return {**args, "model_name": MODEL_NAME}


def run_job(partition: TrainingPartition, evaluation: EvaluationSet, key: str, description: str,
            num_workers: str | None, overrides: dict[str, str], directory: Path) -> Run:
    """Run `tfspark-submit` with the FM trainer on the partition (a fresh output and checkpoint directory) and
    measure it: examples/s over the summary's `fit_seconds`, else its `train_seconds`; the RMSE of its model."""
    import json

    output_dir, checkpoint_dir = directory / key / "output", directory / key / "checkpoints"
    shutil.rmtree(directory / key, ignore_errors=True)
    command = [str(Path(sys.executable).parent / "tfspark-submit"), "--trainer", TRAINER,
               *(["--num-workers", num_workers] if num_workers else []),
               "--output-dir", output_dir.as_uri(), "--checkpoint-dir", checkpoint_dir.as_uri(),
               *(part for name, value in trainer_args(partition, overrides).items()
                 for part in ("--trainer-arg", f"{name}={value}")),
               "--conf", "spark.ui.enabled=false"]
    # A registry of its own, empty: a warm start finds no champion, as on the bench's single partition.
    environment = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1",
                   "TF_CPP_MIN_LOG_LEVEL": "2", "MLFLOW_TRACKING_URI": f"sqlite:///{directory / 'mlflow.db'}"}
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    finished = subprocess.run(command, env=environment, capture_output=True, text=True)
    wall = time.monotonic() - started
    (directory / key / "job.log").write_text(finished.stdout + finished.stderr)
    if finished.returncode != 0:
        raise RuntimeError(f"{key}: tfspark-submit exited with {finished.returncode}; the last lines of its log "
                           f"({directory / key / 'job.log'}):\n" + "\n".join(finished.stderr.splitlines()[-30:]))
    summary = json.loads((output_dir / "train_summary.json").read_text())
    source = "fit_seconds" if "fit_seconds" in summary else "train_seconds"
    return Run(key=key, description=description, batch_size=summary["batch_size"], recipe=recipe_text(summary),
               examples=summary["global_step"] * summary["batch_size"],
               seconds=summary[source], seconds_source=source, rmse=evaluation.model_rmse(output_dir / "model.keras"),
               wall_seconds=wall, log_seconds=step_log_seconds(finished.stderr, summary["batch_size"]),
               load=(load_before, os.getloadavg()[0]))


def recipe_text(params: dict) -> str:
    """What a run trained with, from its training summary's hyper-parameters: epochs, Adam's rate (its peak after
    the batch scaling and the warm-up where `FMHyperParameters` has them) and the warm start."""
    from lakeloop.fm_model import FMHyperParameters

    names = {option.name for option in dataclasses.fields(FMHyperParameters)}
    hparams = FMHyperParameters(**{name: value for name, value in params.items()
                                   if name in names and name != "warm_start"})
    parts = [f"{params.get('epochs_trained', hparams.epochs)} epochs", f"lr {hparams.learning_rate:g}"]
    peak = getattr(hparams, "peak_learning_rate", hparams.learning_rate)
    if peak != hparams.learning_rate:
        parts[-1] += f" → {peak:.4g}"
    if "warmup_steps" in names:
        parts.append(f"warm-up {hparams.warmup_steps} steps")
    if "warm_start" in names:  # the summary's warm_start says what the run started from (None: from scratch)
        parts.append(f"warm start {params['warm_start']}" if params.get("warm_start") else "from scratch")
    return ", ".join(parts)


def step_log_seconds(log: str, batch_size: int) -> float | None:
    """The seconds of the chief's training loop from its step log lines (`examples/s` over each logged interval of
    steps); None if the log has none."""
    seconds, previous = 0.0, 0
    for step, rate in ((int(step), int(rate)) for step, rate in STEP_LOG.findall(log)):
        if step > previous and rate > 0:
            seconds += (step - previous) * batch_size / rate
        previous = step
    return seconds or None


def limit_run(trainer: FMTrainer, examples: InMemoryExamples, evaluation: EvaluationSet, key: str, feed: str,
              directory: Path) -> Run:
    """(L): `trainer.train` in this process on the in-memory examples with the feed `feed`, and its model's RMSE."""
    shutil.rmtree(directory / key, ignore_errors=True)
    load_before = os.getloadavg()[0]
    run: LimitRun = train_in_memory(trainer, examples, feed, directory / key)
    return Run(key=key, description=f"one process, {feed}, no strategy", batch_size=run.batch_size,
               recipe=recipe_text(run.hparams), examples=run.examples, seconds=run.fit_seconds,
               seconds_source="training loop", rmse=evaluation.model_rmse(run.model_path),
               load=(load_before, os.getloadavg()[0]), feed=feed)


def prepared_trainers(partition: TrainingPartition, overrides: list[dict[str, str]]) -> tuple[list, InMemoryExamples]:
    """An FM trainer per set of overrides, each past its `pre_train` (in a local Spark session, stopped after), and
    the training examples its `pre_train` selects, in memory."""
    from lakeloop.fm_trainer import FMTrainer

    spark = start_spark("lakeloop training benchmark (limit's examples)")
    try:
        trainers = [FMTrainer(lake=str(partition.lake), day=partition.day_iso, **args) for args in overrides]
        frames = [trainer.pre_train(spark) for trainer in trainers]  # the same rows: read only the first
        examples = InMemoryExamples.from_arrow(frames[0].toArrow(), trainers[0].label_column)
    finally:
        spark.stop()
    return trainers, examples


def build_or_reuse_partition(events: int, directory: Path) -> TrainingPartition:
    """The cached feature partition of `events` events, built in a local Spark session if missing."""
    from lakeloop.config import load_settings
    from lakeloop.movielens import load_movielens

    cached = ready_partition(directory, events)
    if cached is not None:
        return cached
    spark = start_spark("lakeloop training benchmark (feature partition)")
    try:
        return build_cached_partition(spark, load_movielens(load_settings().dataset_dir), directory, events)
    finally:
        spark.stop()


def fmt_rate(value: float | None) -> str:
    """Examples per second for a table cell."""
    return "—" if value is None else f"{value:,.0f}"


def report(partition: TrainingPartition, runs: dict[str, Run], batch_runs: list[Run], bias_rmse: float,
           limit: Run) -> list[str]:
    """The markdown tables and verdicts."""
    lines = [f"Feature partition: {partition.events:,} events → {partition.train_rows:,} training / "
             f"{partition.eval_rows:,} evaluation examples ({'reused from cache' if partition.reused else 'built'}"
             f" in {partition.build_seconds:.0f} s)", ""]
    rows = [[run.key, run.description, run.batch_size, run.recipe,
             f"{run.examples:,}", f"{run.seconds:.1f} ({run.seconds_source})", fmt_rate(run.examples_per_second),
             fmt_rate(run.log_examples_per_second), "—" if run.wall_seconds is None else f"{run.wall_seconds:.0f}",
             f"{run.rmse:.4f}", f"{run.rmse - limit.rmse:+.4f}", f"{run.load[0]:.1f}–{run.load[1]:.1f}"]
            for run in runs.values()]
    rows.append(["bias", "user/item bias baseline (lakeloop.evaluation.BiasBaseline)", "—", "—", "—", "—", "—", "—",
                 "—", f"{bias_rmse:.4f}", f"{bias_rmse - limit.rmse:+.4f}", "—"])
    lines += markdown_table(["run", "what ran", "batch", "recipe", "examples", "seconds (what)", "examples/s",
                             "examples/s of the step logs", "job wall s", "RMSE", "RMSE − L", "load 1-min"],
                            rows, "llrlrrrrrrrl")
    lines += ["", f"(L) at each batch size (the trainer's own learning rate for it, same epochs, feed {limit.feed}):",
              ""]
    lines += markdown_table(["batch", "recipe", "examples/s", "seconds", "RMSE", "RMSE − bias"],
                            ([run.batch_size, run.recipe,
                              fmt_rate(run.examples_per_second), f"{run.seconds:.1f}", f"{run.rmse:.4f}",
                              f"{run.rmse - bias_rmse:+.4f}"] for run in batch_runs), "rlrrrr")
    return lines


def verdicts(figures: dict) -> list[str]:
    """The issue's targets against the figures."""
    def mark(ok: bool) -> str:
        return "met" if ok else "NOT met"

    gap = abs(figures["job_rmse"] - figures["limit_rmse"])
    ratio = figures["ratio"]
    lines = [f"- ratio J2 / L = {ratio:.3f} (target ≥ {TARGET_RATIO}): {mark(ratio >= TARGET_RATIO)}",
             f"- |RMSE J2 − L| = {gap:.4f} (target ≤ {TARGET_RMSE_GAP}): {mark(gap <= TARGET_RMSE_GAP)}"]
    if figures["speedup"] is None:
        return [*lines, "- speedup J2 / J0: not measured (J0 not run)"]
    return [*lines, f"- speedup J2 / J0 = {figures['speedup']:.2f}× (target ≥ {TARGET_SPEEDUP}× at an equal or "
                    f"better RMSE: {figures['job_rmse']:.4f} vs {figures['today_rmse']:.4f}): "
                    f"{mark(figures['speedup'] >= TARGET_SPEEDUP and figures['job_rmse'] <= figures['today_rmse'])}"]


def job_keys(text: str) -> set[str]:
    """`--jobs`: a comma-separated subset of J1, J2, J0; J2 is added if missing."""
    keys = {key.strip() for key in text.split(",") if key.strip()}
    if not keys <= {"J1", "J2", "J0"}:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of J1,J2,J0, got {text!r}")
    return keys | {"J2"}


def parser() -> argparse.ArgumentParser:
    """The command line."""
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="events of the synthetic day")
    args.add_argument("--epochs", type=int, help="override the FM's epochs everywhere (smoke runs)")
    args.add_argument("--batch-sizes", default=TABLE_BATCH_SIZES, help="batch sizes of (L)'s table")
    args.add_argument("--jobs", default="J1,J2,J0", type=job_keys,
                      help="which tfspark jobs to run besides L (J2, the headline, always runs)")
    args.add_argument("--cache-dir", type=Path, default=CACHE_DIR,
                      help="where the partitions (one per --events) and the runs' outputs go")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Build or reuse the partition, run L, J1, J2, J0 and the batch table; print the report and the JSON line."""
    from bench.harness import local_environment

    options = parser().parse_args(argv)
    if options.events < 1:
        raise SystemExit("--events must be at least 1")
    local_environment()
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:5.0f} s, load {os.getloadavg()[0]:.1f}] {message}", flush=True)

    directory = options.cache_dir / str(options.events)
    partition = build_or_reuse_partition(options.events, directory)
    progress(f"feature partition of {options.events:,} events {'reused' if partition.reused else 'built'}")
    epochs = {"epochs": str(options.epochs)} if options.epochs else {}
    batch_sizes = parse_sizes(options.batch_sizes)
    trainers, examples = prepared_trainers(partition, [epochs] + [
        {**epochs, "batch_size": str(size)} for size in batch_sizes])
    job_trainer, table_trainers = trainers[0], trainers[1:]
    evaluation = EvaluationSet.of(partition)
    runs_dir = directory / "runs"
    progress(f"{examples.rows:,} training examples in memory; (L) on each of its feeds for the whole run")
    limits = []
    for feed in FEEDS:
        limits.append(limit_run(job_trainer, examples, evaluation, f"L ({feed.split(',')[0]})", feed, runs_dir))
        progress(f"{limits[-1].key}: {limits[-1].examples_per_second:,.0f} examples/s, RMSE {limits[-1].rmse:.4f}")
    limit = max(limits, key=lambda run: run.examples_per_second)
    progress(f"(L) is the faster: {limit.key}")
    runs = {run.key: run for run in limits}
    jobs = (("J1", "tfspark job, --num-workers 1, the job's recipe", "1", dict(epochs)),
            ("J2", "tfspark job as the DAG runs it (no --num-workers: auto)", None, dict(epochs)),
            ("J0", f"tfspark job, today's recipe: --num-workers {TODAY_WORKERS}, "
             + ", ".join(f"{name}={value}" for name, value in today_recipe().items()), TODAY_WORKERS,
             {**today_recipe(), **epochs}))
    for key, description, workers, overrides in jobs:
        if key not in options.jobs:
            continue
        progress(f"{key}: {description}")
        runs[key] = run_job(partition, evaluation, key, description, workers, overrides, runs_dir)
        progress(f"{key}: {runs[key].examples_per_second:,.0f} examples/s ({runs[key].seconds_source}), "
                 f"{fmt_rate(runs[key].log_examples_per_second)} by its step logs, RMSE {runs[key].rmse:.4f}")
    batch_runs = []
    for trainer in table_trainers:
        progress(f"(L) at batch {trainer.batch_size}")
        batch_runs.append(limit if trainer.batch_size == limit.batch_size else
                          limit_run(trainer, examples, evaluation, f"L batch {trainer.batch_size}", limit.feed,
                                    runs_dir))
    job, today, single = runs["J2"], runs.get("J0"), runs.get("J1")
    figures = {"events": options.events, "limit_eps": limit.examples_per_second, "job_eps": job.examples_per_second,
               "ratio": job.examples_per_second / limit.examples_per_second, "job_rmse": job.rmse,
               "limit_rmse": limit.rmse, "bias_rmse": evaluation.bias_rmse,
               "speedup": job.examples_per_second / today.examples_per_second if today else None,
               "today_eps": today.examples_per_second if today else None, "today_rmse": today.rmse if today else None,
               "j1_eps": single.examples_per_second if single else None,
               "job_seconds_source": job.seconds_source, "job_log_eps": job.log_examples_per_second,
               "today_log_eps": today.log_examples_per_second if today else None, "batch_size": job.batch_size,
               "seconds": round(time.monotonic() - started, 1), "commit": git_head()}
    print("\n".join(["", *report(partition, runs, batch_runs, evaluation.bias_rmse, limit), "",
                     *verdicts(figures), "",
                     f"whole run {figures['seconds']:.0f} s, load average now "
                     + ", ".join(f"{load:.1f}" for load in os.getloadavg()), ""]), flush=True)
    print_json_line({key: value for key, value in figures.items()
                     if not isinstance(value, float) or math.isfinite(value)})
    return figures


if __name__ == "__main__":
    main()
