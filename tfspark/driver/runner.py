"""The driver side of a training job: `run_trainer` (pre_train, barrier training, summary, shutdown) and
`train_on_spark`, which launches one barrier task per worker (`tfspark.task.barrier`) on the DataFrame or on
its planned Parquet row groups (`tfspark.driver.feed_plan`). See docs/tfspark.md.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

from tfspark.config import SUMMARY_FILE, RunConfig
from tfspark.driver.feed_plan import PARQUET_DIRECT, SPARK_ARROW, plan_feed
from tfspark.driver.workers import is_local_master, resolve_num_workers
from tfspark.storage import RemoteDirectory
from tfspark.task.barrier import RESULT_SCHEMA, TaskPayload, barrier_task
from tfspark.task.parquet_read import ParquetFeedPlan
from tfspark.trainer import TFSparkTrainer

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

logger = logging.getLogger("tfspark")


def run_trainer(spark: SparkSession, trainer: TFSparkTrainer, config: RunConfig) -> dict[str, Any]:
    """Run a whole training job on `spark`: pre_train, barrier training, summary; `shutdown` always."""
    started = time.monotonic()
    try:
        frame = trainer.pre_train(spark)
        prepared = time.monotonic()
        summary = train_on_spark(frame, trainer, config)
        finished = time.monotonic()
        summary["pre_train_seconds"] = round(prepared - started, 3)
        summary["train_seconds"] = round(finished - prepared, 3)
        summary["wall_seconds"] = round(finished - started, 3)
        path = write_summary(config.output_dir, summary)
        logger.info("training summary written to %s", path)
        return summary
    finally:
        shutdown_trainer(trainer)


def shutdown_trainer(trainer: TFSparkTrainer) -> None:
    """Call `trainer.shutdown()`; if training already failed, log a shutdown error instead of masking it."""
    failing = sys.exc_info()[1] is not None
    try:
        trainer.shutdown()
    except Exception:
        if not failing:
            raise
        logger.exception("trainer.shutdown() failed after a training failure")


def write_summary(output_dir: str, summary: dict[str, Any]) -> str:
    """Write `summary` atomically to `<output_dir>/train_summary.json` (local or object store); return its path."""
    data = json.dumps(summary, indent=2, sort_keys=True).encode()
    return RemoteDirectory.for_url_or_local(output_dir).write_bytes(SUMMARY_FILE, data)


def validate_schema(schema: StructType, label_column: str) -> None:
    """Refuse column types the Arrow feed cannot turn into tensors, on the driver, before any task starts."""
    from pyspark.sql import types as T

    numeric = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType, T.BooleanType)
    if label_column not in schema.names:
        raise ValueError(f"label column {label_column!r} is not in the DataFrame columns {schema.names}")
    if len(schema.names) < 2:
        raise ValueError("the DataFrame needs at least one feature column besides the label")
    for field in schema.fields:
        kind = field.dataType
        if isinstance(kind, T.ArrayType):
            kind = kind.elementType
        if not isinstance(kind, numeric):
            raise TypeError(
                f"column {field.name!r} is {field.dataType.simpleString()}; the feed takes numeric columns and "
                "fixed-length numeric arrays (index strings and convert timestamps in pre_train)"
            )


def check_worker_reuse(trainer: TFSparkTrainer, reuse: str) -> None:
    """Refuse a `keras_fit` trainer on reused Python workers, on the driver before any task starts: a reused worker
    may already have imported TensorFlow with Keras 3, and tf-keras must be chosen before that import (the task
    would fail, on every retry). For any other trainer, warn."""
    if reuse.strip().lower() != "true":
        return
    if trainer.keras_fit:
        raise ValueError(
            f"{type(trainer).__name__} sets keras_fit = True, which needs a fresh Python worker per task "
            "(tf-keras is chosen before TensorFlow is imported), but spark.python.worker.reuse is true: set "
            "spark.python.worker.reuse=false on the SparkSession (tfspark-submit does)"
        )
    logger.warning(
        "spark.python.worker.reuse is true: a second training job in this application would find "
        "TensorFlow already configured in a reused worker (tfspark-submit sets it to false)"
    )


def train_on_spark(frame: DataFrame, trainer: TFSparkTrainer, config: RunConfig) -> dict[str, Any]:
    """Train `trainer` on `frame` with `config.num_workers` barrier tasks (one per executor if None); return the
    run's summary."""
    spark = frame.sparkSession
    config = dataclasses.replace(config, num_workers=resolve_num_workers(config.num_workers, spark.sparkContext))
    validate_schema(frame.schema, trainer.label_column)
    check_worker_reuse(trainer, spark.sparkContext.getConf().get("spark.python.worker.reuse", "true"))
    local_gpus = _local_master_gpus(spark, config)
    parquet, fallback_reason = plan_feed(frame, config.num_workers)
    if parquet is not None:
        # The tasks read their row groups themselves; Spark only launches them (and retries them as a gang).
        tasks = spark.range(config.num_workers, numPartitions=config.num_workers)
    else:
        # Round-robin into exactly one even shard per worker: Parquet splits are often uneven (786k/214k
        # seen), and every worker runs the same number of steps, so the small shard would be cycled many times.
        tasks = frame.repartition(config.num_workers)
    payload = _task_payload(trainer, config, local_gpus, parquet)
    spark.sparkContext.setJobDescription(f"tfspark train {config.trainer_name} on {config.num_workers} workers")
    trained = tasks.mapInArrow(functools.partial(barrier_task, payload=payload), RESULT_SCHEMA, barrier=True)
    # The shuffle makes the barrier stage a ShuffleMapStage: Spark reruns a failed one whole, while a
    # failed barrier ResultStage aborts the job ("Could not recover from a failed barrier ResultStage").
    results = sorted(trained.repartition(1).collect(), key=lambda row: row["rank"])
    summary = _run_summary(config, payload, [json.loads(row["result"]) for row in results])
    summary["application_id"] = spark.sparkContext.applicationId
    summary["feed_path"] = SPARK_ARROW if parquet is None else PARQUET_DIRECT
    summary["feed_path_reason"] = fallback_reason
    return summary


def _task_payload(
    trainer: TFSparkTrainer, config: RunConfig, local_gpus: tuple[str, ...], parquet: ParquetFeedPlan | None
) -> TaskPayload:
    """What every barrier task receives; the trainer pickled here, so an unpicklable one fails on the driver."""
    from pyspark import cloudpickle

    try:
        pickled_trainer = cloudpickle.dumps(trainer)
    except Exception as error:
        raise TypeError(
            f"{type(trainer).__name__} must be picklable to reach the workers: keep the SparkSession, "
            f"DataFrames and open connections off `self` ({error})"
        ) from error
    return TaskPayload(
        trainer=pickled_trainer,
        config=config,
        local_gpus=local_gpus,
        batch_size=trainer.batch_size,
        epochs=trainer.epochs,
        label_column=trainer.label_column,
        checkpoint_every=config.checkpoint_every or trainer.checkpoint_every,
        checkpoint_seconds=(config.checkpoint_seconds if config.checkpoint_seconds is not None
                            else trainer.checkpoint_seconds),
        shuffle=trainer.shuffle,
        seed=trainer.seed,
        parquet=parquet,
        keras_fit=bool(trainer.keras_fit),
    )


def _local_master_gpus(spark: SparkSession, config: RunConfig) -> tuple[str, ...]:
    """On a local master (no GPU scheduling in Spark) the driver's GPUs, which the workers split by rank."""
    if config.gpus_per_worker <= 0 or not is_local_master(spark.sparkContext.master):
        return ()
    gpu = spark.sparkContext.resources.get("gpu")
    addresses = tuple(gpu.addresses) if gpu is not None else ()
    needed = config.gpus_per_worker * config.num_workers
    if len(addresses) < needed:
        raise ValueError(
            f"{config.num_workers} workers x {config.gpus_per_worker} GPUs need {needed} driver GPUs on a local "
            f"master, found {list(addresses)}; set spark.driver.resource.gpu.amount and its discoveryScript "
            "(tfspark-submit does)"
        )
    return addresses


def _run_summary(config: RunConfig, payload: TaskPayload, workers: list[dict[str, Any]]) -> dict[str, Any]:
    """The training summary: the chief's `train` and `fit` results, then facts of every worker, by rank."""
    chief = workers[0]
    trained = chief.get("train") or {}
    fitted = chief.get("fit") or {}
    summary: dict[str, Any] = dict(trained)
    for key in ("loss", "global_step", "resumed_from_step", "fit_seconds", "examples_per_second"):
        summary[key] = fitted[key] if key in fitted else trained.get(key)
    for key in ("epochs_trained", "resumed_from_epoch", "stopped_early"):  # Keras fit's (keras_fit_callback)
        if key in fitted:
            summary[key] = fitted[key]
    summary.update(
        trainer=config.trainer_name,
        workers=len(workers),
        rows=sum(worker["rows"] for worker in workers),
        worker_rows=[worker["rows"] for worker in workers],
        epochs=payload.epochs,
        steps_per_epoch=chief["steps_per_epoch"],
        batch_size=chief["batch_size"],
        epoch_losses=fitted.get("epoch_losses"),
        epoch_metrics=fitted.get("epoch_metrics"),
        tensorboard_dir=fitted.get("tensorboard_dir"),
        checkpoint_dir=config.checkpoint_dir,
        output_dir=config.output_dir,
        cuda_visible_devices=[worker["cuda_visible_devices"] for worker in workers],
        tensorflow_preloaded=[worker["tensorflow_preloaded"] for worker in workers],
        cache_spilled=[worker["cache_spilled"] for worker in workers],
        cache_fill_seconds=[worker["cache_fill_seconds"] for worker in workers],
        peak_rss_bytes=[worker["peak_rss_bytes"] for worker in workers],
    )
    return summary
