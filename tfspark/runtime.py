"""The barrier job: the DataFrame's N partitions become N TensorFlow workers training one model.

Driver side, `run_trainer` calls the trainer's `pre_train`, runs `train_on_spark`, writes
`<output_dir>/train_summary.json` and always calls `shutdown`. `train_on_spark` hands each worker its share
of the DataFrame: when the DataFrame is a plain Parquet scan, the barrier tasks read their planned row groups
themselves (`tfspark.parquet_direct`); otherwise the DataFrame is repartitioned into one shard per worker and
each shard reaches its barrier task through `DataFrame.mapInArrow(..., barrier=True)`. The summary's
`feed_path` says which (`parquet-direct` or `spark-arrow`, with `feed_path_reason`). Task side,
`_barrier_task` sets the GPUs the task owns (before TensorFlow is imported), caches its Arrow batches (on
the direct path in a background thread, training on them as they arrive), meets the other tasks through
`allGather`, builds `TF_CONFIG` and the strategy, and runs the user's `train`. A failed task fails the whole
barrier stage, Spark reruns every task, and training resumes from the last checkpoint.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import pickle
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from tfspark.feed import DEFAULT_CACHE_MEMORY_BYTES, ArrowCache, BackgroundFill, BatchFeed, cache_partition
from tfspark.parquet_direct import (
    PARQUET_DIRECT,
    SPARK_ARROW,
    DirectPathUnavailable,
    ParquetFeedPlan,
    plan_parquet_feed,
)
from tfspark.rendezvous import (
    WorkerInfo,
    assign_gpus,
    gather_workers,
    plan_steps,
    reserve_port,
    set_tf_config,
    task_host,
)
from tfspark.storage import RemoteDirectory, url_to_path
from tfspark.submit import SUMMARY_FILE, is_local_master
from tfspark.trainer import TFSparkTrainer, TrainContext

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

logger = logging.getLogger("tfspark")

RESULT_SCHEMA = "rank long, result string"
_RESULT_ARROW_SCHEMA = pa.schema([("rank", pa.int64()), ("result", pa.string())])


@dataclass(frozen=True)
class RunConfig:
    """Where and how wide to train; the trainer's own attributes say how (batch size, epochs...)."""

    checkpoint_dir: str
    output_dir: str
    num_workers: int = 1
    gpus_per_worker: int = 0
    cache_memory_bytes: int = DEFAULT_CACHE_MEMORY_BYTES
    log_every: int = 100
    trainer_name: str = ""


@dataclass(frozen=True)
class _TaskPayload:
    """Everything a barrier task receives: plain values plus the pickled trainer.

    The trainer travels as bytes and is unpickled only after `CUDA_VISIBLE_DEVICES` is set, because
    unpickling imports the trainer's module, which may import TensorFlow.
    """

    trainer: bytes
    config: RunConfig
    local_gpus: tuple[str, ...]
    batch_size: int
    epochs: int
    label_column: str
    checkpoint_every: int
    shuffle: bool
    seed: int
    parquet: ParquetFeedPlan | None = None


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


def train_on_spark(frame: DataFrame, trainer: TFSparkTrainer, config: RunConfig) -> dict[str, Any]:
    """Train `trainer` on `frame` with `config.num_workers` barrier tasks; return the run's summary."""
    from pyspark import cloudpickle

    spark = frame.sparkSession
    validate_schema(frame.schema, trainer.label_column)
    if spark.sparkContext.getConf().get("spark.python.worker.reuse", "true").lower() == "true":
        logger.warning(
            "spark.python.worker.reuse is true: a second training job in this application would find "
            "TensorFlow already configured in a reused worker (tfspark-submit sets it to false)"
        )
    local_gpus = _local_master_gpus(spark, config)
    parquet, fallback_reason = _plan_feed(frame, config.num_workers)
    if parquet is not None:
        # The tasks read their row groups themselves; Spark only launches them (and retries them as a gang).
        tasks = spark.range(config.num_workers, numPartitions=config.num_workers)
    else:
        # Round-robin into exactly one even shard per worker: Parquet splits are often uneven (786k/214k
        # seen), and every worker runs the same number of steps, so the small shard would be cycled many times.
        tasks = frame.repartition(config.num_workers)
    try:
        pickled_trainer = cloudpickle.dumps(trainer)
    except Exception as error:
        raise TypeError(
            f"{type(trainer).__name__} must be picklable to reach the workers: keep the SparkSession, "
            f"DataFrames and open connections off `self` ({error})"
        ) from error
    payload = _TaskPayload(
        trainer=pickled_trainer,
        config=config,
        local_gpus=local_gpus,
        batch_size=trainer.batch_size,
        epochs=trainer.epochs,
        label_column=trainer.label_column,
        checkpoint_every=trainer.checkpoint_every,
        shuffle=trainer.shuffle,
        seed=trainer.seed,
        parquet=parquet,
    )
    spark.sparkContext.setJobDescription(f"tfspark train {config.trainer_name} on {config.num_workers} workers")
    trained = tasks.mapInArrow(functools.partial(_barrier_task, payload=payload), RESULT_SCHEMA, barrier=True)
    # The shuffle makes the barrier stage a ShuffleMapStage: Spark reruns a failed one whole, while a
    # failed barrier ResultStage aborts the job ("Could not recover from a failed barrier ResultStage").
    results = sorted(trained.repartition(1).collect(), key=lambda row: row["rank"])
    summary = _summarise(config, payload, [json.loads(row["result"]) for row in results])
    summary["application_id"] = spark.sparkContext.applicationId
    summary["feed_path"] = SPARK_ARROW if parquet is None else PARQUET_DIRECT
    summary["feed_path_reason"] = fallback_reason
    return summary


def _plan_feed(frame: DataFrame, num_workers: int) -> tuple[ParquetFeedPlan | None, str | None]:
    """The direct Parquet plan when `frame` qualifies, else None and why not; the choice is logged."""
    try:
        parquet = plan_parquet_feed(frame, num_workers)
    except DirectPathUnavailable as reason:
        logger.info("feed path: %s (not %s: %s)", SPARK_ARROW, PARQUET_DIRECT, reason)
        return None, str(reason)
    logger.info(
        "feed path: %s (%d files, %d row groups, rows per worker %s)",
        PARQUET_DIRECT,
        parquet.num_files,
        parquet.num_row_groups,
        parquet.worker_rows,
    )
    return parquet, None


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


def _summarise(config: RunConfig, payload: _TaskPayload, workers: list[dict[str, Any]]) -> dict[str, Any]:
    chief = workers[0]
    trained = chief.get("train") or {}
    fitted = chief.get("fit") or {}
    summary: dict[str, Any] = dict(trained)
    for key in ("loss", "global_step", "resumed_from_step"):
        summary[key] = fitted[key] if key in fitted else trained.get(key)
    summary.update(
        trainer=config.trainer_name,
        workers=len(workers),
        rows=sum(worker["rows"] for worker in workers),
        worker_rows=[worker["rows"] for worker in workers],
        epochs=payload.epochs,
        steps_per_epoch=chief["steps_per_epoch"],
        batch_size=chief["batch_size"],
        epoch_losses=fitted.get("epoch_losses"),
        checkpoint_dir=config.checkpoint_dir,
        output_dir=config.output_dir,
        cuda_visible_devices=[worker["cuda_visible_devices"] for worker in workers],
        tensorflow_preloaded=[worker["tensorflow_preloaded"] for worker in workers],
        cache_spilled=[worker["cache_spilled"] for worker in workers],
        cache_fill_seconds=[worker["cache_fill_seconds"] for worker in workers],
        peak_rss_bytes=[worker["peak_rss_bytes"] for worker in workers],
    )
    return summary


def _configure_task_logging(rank: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s tfspark[rank {rank}] %(levelname)s %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


def make_strategy(num_workers: int) -> Any:
    """MultiWorkerMirroredStrategy for several workers (reads TF_CONFIG); one worker: its local devices."""
    import tensorflow as tf

    if num_workers > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")


def _jsonable(value: Any) -> Any:
    """Turn numpy/TensorFlow scalars and arrays (and containers of them) into JSON values."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if hasattr(value, "numpy"):
        value = value.numpy()
    if hasattr(value, "tolist"):
        return value.tolist()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _use_spark_local_dir() -> None:
    """Keep this task's temporary files (feed spill, non-chief checkpoints) in Spark's local directory.

    Spark deletes it with the application, also when a killed worker could not clean up after itself.
    The Python worker runs only this task (`spark.python.worker.reuse=false`), so the setting is ours.
    """
    local_dirs = os.environ.get("SPARK_LOCAL_DIRS")
    if local_dirs:
        tempfile.tempdir = tempfile.mkdtemp(prefix="tfspark-", dir=local_dirs.split(",")[0])


def _barrier_task(batches: Iterator[pa.RecordBatch], payload: _TaskPayload) -> Iterator[pa.RecordBatch]:
    """One TensorFlow worker: GPUs, local cache, rendezvous, strategy, the user's `train`."""
    from pyspark import BarrierTaskContext

    barrier = BarrierTaskContext.get()
    rank = barrier.partitionId()
    config = payload.config
    _configure_task_logging(rank)
    _use_spark_local_dir()
    tensorflow_preloaded = "tensorflow" in sys.modules
    if tensorflow_preloaded:
        logger.warning("TensorFlow was imported before CUDA_VISIBLE_DEVICES was set; GPU isolation may not hold")
    devices = assign_gpus(barrier.resources(), config.gpus_per_worker, rank, payload.local_gpus)
    fill: BackgroundFill | None = None
    if payload.parquet is not None:
        for _ in batches:  # the one-row launcher partition
            pass
        # The rows are planned: the partition is read in the background while TensorFlow starts and trains.
        rows = payload.parquet.worker_rows[rank]
        cache = ArrowCache(memory_limit_bytes=config.cache_memory_bytes)
        fill = BackgroundFill(payload.parquet.batches(rank), cache, rows).start()
    else:
        filling = time.monotonic()
        cache = cache_partition(batches, memory_limit_bytes=config.cache_memory_bytes)
        fill_seconds = time.monotonic() - filling
        rows = cache.num_rows
    try:
        tasks = barrier.getTaskInfos()
        # Spark's barrier syncs poll about once a second: a lone task has no one to wait for and skips them.
        alone = len(tasks) == 1
        port = reserve_port()
        me = WorkerInfo(f"{task_host(tasks[rank].address)}:{port.getsockname()[1]}", rows, devices)
        try:
            workers = [me] if alone else gather_workers(barrier, me)
        finally:
            port.close()
        plan = plan_steps([worker.rows for worker in workers], payload.batch_size, payload.epochs)
        logger.info(
            "rank %d of %d: %d rows (%s), cuda_visible_devices=%r, %d steps/epoch of %d rows",
            rank,
            len(workers),
            rows,
            "read while training starts" if fill is not None else f"cached, spilled: {cache.spilled}",
            devices,
            plan.steps_per_epoch,
            plan.global_batch_size,
        )
        set_tf_config([worker.address for worker in workers], rank)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
        trainer: TFSparkTrainer = pickle.loads(payload.trainer)
        strategy = make_strategy(len(workers))
        replicas = max(1, strategy.num_replicas_in_sync // len(workers))
        if plan.per_worker_batch_size % replicas:
            raise ValueError(
                f"per-worker batch {plan.per_worker_batch_size} does not split over {replicas} local replicas"
            )
        feed = BatchFeed(
            cache,
            payload.label_column,
            plan.per_worker_batch_size // replicas,
            plan.total_steps * replicas,
            shuffle=payload.shuffle,
            seed=payload.seed,
            rank=rank,
            fill=fill,
        )
        ctx = TrainContext(
            strategy=strategy,
            rank=rank,
            num_workers=len(workers),
            steps_per_epoch=plan.steps_per_epoch,
            epochs=plan.epochs,
            batch_size=plan.global_batch_size,
            per_worker_batch_size=plan.per_worker_batch_size,
            checkpoint_dir=url_to_path(config.checkpoint_dir),
            output_dir=url_to_path(config.output_dir),
            checkpoint_every=payload.checkpoint_every,
            log_every=config.log_every,
            rows=sum(worker.rows for worker in workers),
            feed=feed,
        )
        trained = trainer.train(feed.dataset(), ctx)
        if fill is not None:
            fill.wait()
            fill_seconds = fill.seconds
        if not alone:
            barrier.barrier()
        result = {
            "train": _jsonable(trained or {}),
            "fit": _jsonable(ctx.fit_result),
            "rows": rows,
            "steps_per_epoch": plan.steps_per_epoch,
            "batch_size": plan.global_batch_size,
            "cuda_visible_devices": devices,
            "tensorflow_preloaded": tensorflow_preloaded,
            "cache_spilled": cache.spilled,
            "cache_fill_seconds": round(fill_seconds, 3),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        }
    finally:
        if fill is not None:
            fill.close()
        cache.close()
    record = {"rank": rank, "result": json.dumps(result)}
    yield pa.RecordBatch.from_pylist([record], schema=_RESULT_ARROW_SCHEMA)
