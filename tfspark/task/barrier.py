"""The barrier task: one TensorFlow worker per task of the stage the driver launches (`tfspark.driver.runner`).

A failed task fails the whole barrier stage; Spark reruns every task and training resumes from the last
checkpoint. See docs/tfspark.md.
"""

from __future__ import annotations

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

from tfspark.config import RunConfig
from tfspark.context import TrainContext
from tfspark.storage import url_to_path
from tfspark.task.feed import ArrowCache, BackgroundFill, BatchFeed, cache_partition
from tfspark.task.keras_fit import use_legacy_keras
from tfspark.task.parquet_read import ParquetFeedPlan
from tfspark.task.rendezvous import (
    StepPlan,
    WorkerInfo,
    assign_gpus,
    gather_workers,
    plan_steps,
    reserve_port,
    set_tf_config,
    task_host,
)

if TYPE_CHECKING:
    from pyspark import BarrierTaskContext

    from tfspark.trainer import TFSparkTrainer

logger = logging.getLogger("tfspark")

RESULT_SCHEMA = "rank long, result string"
RESULT_ARROW_SCHEMA = pa.schema([("rank", pa.int64()), ("result", pa.string())])


@dataclass(frozen=True)
class TaskPayload:
    """Everything a barrier task receives: plain values plus the pickled trainer.

    The trainer travels as bytes and is unpickled only after `CUDA_VISIBLE_DEVICES` and, for a `keras_fit`
    trainer, `TF_USE_LEGACY_KERAS` are set, because unpickling imports the trainer's module, which may import
    TensorFlow; so `keras_fit` travels as a plain field, read from the trainer on the driver.
    """

    trainer: bytes
    config: RunConfig
    local_gpus: tuple[str, ...]
    batch_size: int
    epochs: int
    label_column: str
    checkpoint_every: int
    checkpoint_seconds: float | None
    shuffle: bool
    seed: int
    parquet: ParquetFeedPlan | None = None
    keras_fit: bool = False


@dataclass(frozen=True)
class _Worker:
    """This task as a TensorFlow worker: its rank and the GPUs it sees."""

    rank: int
    devices: str
    tensorflow_preloaded: bool


@dataclass
class _LocalShard:
    """This worker's rows: its cache and, on the direct Parquet path, the fill still reading into it."""

    cache: ArrowCache
    rows: int
    fill: BackgroundFill | None = None
    fill_seconds: float | None = None

    def describe(self) -> str:
        return "read while training starts" if self.fill is not None else f"cached, spilled: {self.cache.spilled}"

    def finish(self) -> None:
        """Wait for a background fill to complete (it raises the reader's error, if any)."""
        if self.fill is not None:
            self.fill.wait()
            self.fill_seconds = self.fill.seconds

    def close(self) -> None:
        if self.fill is not None:
            self.fill.close()
        self.cache.close()


@dataclass(frozen=True)
class _Cluster:
    """The workers of the stage, by rank, and the step plan they agreed on."""

    workers: list[WorkerInfo]
    plan: StepPlan
    alone: bool


def barrier_task(batches: Iterator[pa.RecordBatch], payload: TaskPayload) -> Iterator[pa.RecordBatch]:
    """One TensorFlow worker, the barrier stage's `mapInArrow` function: yields its one `RESULT_SCHEMA` row.

    Fill cache → rendezvous → train → summarise; the cache is closed whatever happens.
    """
    from pyspark import BarrierTaskContext

    barrier = BarrierTaskContext.get()
    worker = _start_worker(barrier, payload)
    shard = _fill_cache(batches, payload, worker.rank)
    try:
        cluster = _rendezvous(barrier, worker, shard, payload)
        trained, ctx = _train(payload, worker.rank, shard, cluster)
        shard.finish()
        if not cluster.alone:
            barrier.barrier()
        result = _summarise(worker, shard, cluster, trained, ctx)
    finally:
        shard.close()
    yield pa.RecordBatch.from_pylist([{"rank": worker.rank, "result": json.dumps(result)}], schema=RESULT_ARROW_SCHEMA)


def _start_worker(barrier: BarrierTaskContext, payload: TaskPayload) -> _Worker:
    """Logging, temporary directory, Keras version and GPUs of this task, all before TensorFlow is imported."""
    rank = barrier.partitionId()
    _configure_task_logging(rank)
    _use_spark_local_dir()
    tensorflow_preloaded = "tensorflow" in sys.modules
    if tensorflow_preloaded:
        logger.warning("TensorFlow was imported before CUDA_VISIBLE_DEVICES was set; GPU isolation may not hold")
    if payload.keras_fit:
        use_legacy_keras()
    devices = assign_gpus(barrier.resources(), payload.config.gpus_per_worker, rank, payload.local_gpus)
    return _Worker(rank, devices, tensorflow_preloaded)


def _fill_cache(batches: Iterator[pa.RecordBatch], payload: TaskPayload, rank: int) -> _LocalShard:
    """Cache this worker's rows: the batches Spark hands over, or its planned Parquet rows read in the background."""
    memory_limit = payload.config.cache_memory_bytes
    if payload.parquet is None:
        filling = time.monotonic()
        cache = cache_partition(batches, memory_limit_bytes=memory_limit)
        return _LocalShard(cache, cache.num_rows, fill_seconds=time.monotonic() - filling)
    for _ in batches:  # the one-row launcher partition
        pass
    # The rows are planned: the partition is read in the background while TensorFlow starts and trains.
    rows = payload.parquet.worker_rows[rank]
    cache = ArrowCache(memory_limit_bytes=memory_limit)
    return _LocalShard(cache, rows, BackgroundFill(payload.parquet.batches(rank), cache, rows).start())


def _rendezvous(barrier: BarrierTaskContext, worker: _Worker, shard: _LocalShard, payload: TaskPayload) -> _Cluster:
    """Exchange addresses and row counts with the other tasks (`allGather`) and agree on the step plan."""
    tasks = barrier.getTaskInfos()
    # Spark's barrier syncs poll about once a second: a lone task has no one to wait for and skips them.
    alone = len(tasks) == 1
    port = reserve_port()
    me = WorkerInfo(f"{task_host(tasks[worker.rank].address)}:{port.getsockname()[1]}", shard.rows, worker.devices)
    try:
        workers = [me] if alone else gather_workers(barrier, me)
    finally:
        port.close()
    plan = plan_steps([info.rows for info in workers], payload.batch_size, payload.epochs)
    logger.info(
        "rank %d of %d: %d rows (%s), cuda_visible_devices=%r, %d steps/epoch of %d rows",
        worker.rank,
        len(workers),
        shard.rows,
        shard.describe(),
        worker.devices,
        plan.steps_per_epoch,
        plan.global_batch_size,
    )
    return _Cluster(workers, plan, alone)


def _train(
    payload: TaskPayload, rank: int, shard: _LocalShard, cluster: _Cluster
) -> tuple[dict[str, Any] | None, TrainContext]:
    """Join the TensorFlow cluster and run the user's `train` on this worker's feed; return what it returned."""
    set_tf_config([info.address for info in cluster.workers], rank)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    trainer: TFSparkTrainer = pickle.loads(payload.trainer)
    strategy = make_strategy(len(cluster.workers), payload.keras_fit)
    feed = _feed(payload, rank, shard, cluster, strategy)
    plan, config = cluster.plan, payload.config
    ctx = TrainContext(
        strategy=strategy,
        rank=rank,
        num_workers=len(cluster.workers),
        steps_per_epoch=plan.steps_per_epoch,
        epochs=plan.epochs,
        batch_size=plan.global_batch_size,
        per_worker_batch_size=plan.per_worker_batch_size,
        checkpoint_dir=url_to_path(config.checkpoint_dir),
        output_dir=url_to_path(config.output_dir),
        checkpoint_every=payload.checkpoint_every,
        checkpoint_seconds=payload.checkpoint_seconds,
        log_every=config.log_every,
        rows=sum(info.rows for info in cluster.workers),
        keras_fit=payload.keras_fit,
        feed=feed,
    )
    trained = trainer.train(feed.dataset(), ctx)
    if payload.keras_fit and ctx.is_chief and ctx.fit_result is None:
        logger.warning("the training summary has no loss or global step: pass ctx.keras_fit_callback() to model.fit")
    return trained, ctx


def _feed(payload: TaskPayload, rank: int, shard: _LocalShard, cluster: _Cluster, strategy: Any) -> BatchFeed:
    """The worker's batches: its share of the global batch, split over its local replicas.

    For Keras `model.fit` they hold the global batch instead: fit hands the dataset to the strategy, which splits
    every batch into one piece per replica of the cluster (the batch of a global step); with auto-sharding off
    this worker trains all the pieces, its own rows, one step per `per_worker_batch_size` of them.
    """
    plan, workers = cluster.plan, len(cluster.workers)
    replicas = max(1, strategy.num_replicas_in_sync // workers)
    if plan.per_worker_batch_size % replicas:
        raise ValueError(f"per-worker batch {plan.per_worker_batch_size} does not split over {replicas} local replicas")
    if payload.keras_fit:
        batch_size, batches = plan.global_batch_size, -(-plan.total_steps // workers)
    else:
        batch_size, batches = plan.per_worker_batch_size // replicas, plan.total_steps * replicas
    return BatchFeed(
        shard.cache,
        payload.label_column,
        batch_size,
        batches,
        shuffle=payload.shuffle,
        seed=payload.seed,
        rank=rank,
        fill=shard.fill,
    )


def _summarise(
    worker: _Worker, shard: _LocalShard, cluster: _Cluster, trained: dict[str, Any] | None, ctx: TrainContext
) -> dict[str, Any]:
    """This worker's result row: what `train` and `fit` returned, and how the worker ran."""
    return {
        "train": _jsonable(trained or {}),
        "fit": _jsonable(ctx.fit_result),
        "rows": shard.rows,
        "steps_per_epoch": cluster.plan.steps_per_epoch,
        "batch_size": cluster.plan.global_batch_size,
        "cuda_visible_devices": worker.devices,
        "tensorflow_preloaded": worker.tensorflow_preloaded,
        "cache_spilled": shard.cache.spilled,
        "cache_fill_seconds": round(shard.fill_seconds, 3),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def make_strategy(num_workers: int, keras_fit: bool = False) -> Any:
    """MultiWorkerMirroredStrategy for several workers (reads TF_CONFIG); one worker: its local devices (for Keras fit
    with one device TensorFlow's default strategy, as Keras' BackupAndRestore refuses OneDeviceStrategy)."""
    import tensorflow as tf

    if num_workers > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    if keras_fit:
        return tf.distribute.get_strategy()
    return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")


def _configure_task_logging(rank: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s tfspark[rank {rank}] %(levelname)s %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _use_spark_local_dir() -> None:
    """Keep this task's temporary files (feed spill, non-chief checkpoints) in Spark's local directory.

    Spark deletes it with the application, also when a killed worker could not clean up after itself.
    The Python worker runs only this task (`spark.python.worker.reuse=false`), so the setting is ours.
    """
    local_dirs = os.environ.get("SPARK_LOCAL_DIRS")
    if local_dirs:
        tempfile.tempdir = tempfile.mkdtemp(prefix="tfspark-", dir=local_dirs.split(",")[0])


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
