"""(d), the tfspark feed, measured by the real runtime: a trainer run through
`tfspark.driver.runner.run_trainer` that times the feed's passes and, optionally, FM training fed by it
against in-memory numpy, in the same barrier task.
See docs/performance.md.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark import cloudpickle

from bench.harness import Measurement
from bench.support import rival_feeds, synthetic_features
from bench.support.rival_feeds import BATCH_SIZE, batched_dataset
from bench.support.synthetic_features import dataset_spec, read_parquet_numpy
from lakeloop.features import FEATURE_COLUMNS, LABEL, FeatureSpec
from lakeloop.fm_model import FMHyperParameters
from tfspark import TFSparkTrainer, TrainContext
from tfspark.config import DEFAULT_CACHE_MEMORY_BYTES
from tfspark.driver.feed_plan import PARQUET_DIRECT, PARQUET_DIRECT_CONF, SPARK_ARROW

if TYPE_CHECKING:
    import tensorflow as tf
    from pyspark.sql import DataFrame, SparkSession

# The probe runs in Spark's Python workers, which need not be able to import `bench`: ship it, and the bench code it
# calls there, by value.
for _module in (sys.modules[__name__], rival_feeds, synthetic_features):
    cloudpickle.register_pickle_by_value(_module)

FIRST_PASS = {PARQUET_DIRECT: "(d1) tfspark feed, direct Parquet, first pass",
              SPARK_ARROW: "(d2) tfspark feed, Spark → Arrow, first pass"}
CACHED_PASSES = "(d) tfspark feed, cached passes"


class ArrowFeedProbe(TFSparkTrainer):
    """A trainer that times the runtime's feed, and optionally FM training fed by it vs by numpy.

    `pre_train` reads the Parquet table as `lakeloop.fm_trainer.FMTrainer` reads its training examples (a
    projection of the model's columns) and stamps the time; the object travels to the barrier task and
    stamps the time again when unpickled, which the runtime does after the task has cached its whole
    partition: the difference is the files → cache part of the feed (read by the task itself on the direct
    Parquet path, converted by Spark and shipped through `mapInArrow` on the other). `train` then iterates the
    dataset for `epochs` passes (cache → `tf.data` tensors) and, with `train_fm`, fits the FM for the same
    steps with `ctx.fit` twice: on the Arrow feed and on the same Parquet read into numpy (untimed), in
    the order `numpy_first` says (alternate it between runs: the second fit finds TensorFlow warmer).
    """

    batch_size = BATCH_SIZE
    label_column = LABEL
    checkpoint_every = 1 << 40

    def __init__(self, path: str, epochs: int = 2, train_fm: bool = False, numpy_first: bool = True) -> None:
        super().__init__()
        self.path = path
        self.epochs = epochs
        self.train_fm = train_fm
        self.numpy_first = numpy_first
        self.hparams = FMHyperParameters(batch_size=BATCH_SIZE)
        self.spec: FeatureSpec | None = None
        self.pre_train_done_at: float | None = None
        self.unpickled_at: float | None = None

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.unpickled_at = time.monotonic()

    def pre_train(self, spark: SparkSession) -> DataFrame:
        """The feature table, as the FM trainer reads it from the lake."""
        self.spec = dataset_spec(Path(self.path))
        frame = spark.read.parquet(self.path).select(*FEATURE_COLUMNS, LABEL)
        self.pre_train_done_at = time.monotonic()
        return frame

    def train(self, dataset: tf.data.Dataset, ctx: TrainContext) -> dict[str, Any]:
        """Time the passes over `dataset`; with `train_fm`, time FM training on the feed and on numpy."""
        started = time.monotonic()
        pass_ends, steps, rows = [], 0, 0
        for _, label in dataset:
            steps += 1
            rows += int(label.shape[0])
            if steps % ctx.steps_per_epoch == 0:
                pass_ends.append(time.monotonic())
        marks = [started, *pass_ends]
        result: dict[str, Any] = {
            "start_seconds": self.unpickled_at - self.pre_train_done_at,
            "setup_seconds": started - self.unpickled_at,
            "pass_seconds": [end - start for start, end in zip(marks, marks[1:], strict=False)],
            "pass_rows": rows // max(len(pass_ends), 1),
        }
        if self.train_fm:
            result["training"] = {}
            for source in ("numpy", "arrow") if self.numpy_first else ("arrow", "numpy"):
                if source == "arrow":
                    result["training"]["arrow"] = self._fit(ctx, ctx.feed.dataset(), keep_feed=True)
                else:
                    in_memory = batched_dataset(*read_parquet_numpy(Path(self.path)), ctx.per_worker_batch_size)
                    result["training"]["numpy"] = self._fit(ctx, in_memory.repeat(), keep_feed=False)
        return result

    def _fit(self, ctx: TrainContext, dataset: tf.data.Dataset, keep_feed: bool) -> dict[str, Any]:
        import keras

        from lakeloop.fm_trainer import training_recipe, with_negatives

        checkpoints = tempfile.mkdtemp(prefix="feed-bench-ckpt-")
        run_ctx = dataclasses.replace(ctx, checkpoint_dir=checkpoints, feed=ctx.feed if keep_feed else None,
                                      fit_result=None)
        try:
            keras.utils.set_random_seed(self.hparams.seed)
            with ctx.strategy.scope():
                recipe = training_recipe(self.spec, self.hparams, ctx.total_steps)
            examples = with_negatives(dataset, self.hparams.negatives, self.spec.item_vocab_size)
            started = time.monotonic()
            fitted = run_ctx.fit(recipe.trained, recipe.optimizer, recipe.loss, examples)
            seconds = time.monotonic() - started
        finally:
            shutil.rmtree(checkpoints, ignore_errors=True)
        return {"seconds": seconds, "examples": fitted["global_step"] * ctx.batch_size, "loss": fitted["loss"]}


def run_probe(spark: SparkSession, trainer: ArrowFeedProbe, workdir: Path, num_workers: int = 1,
              cache_memory_bytes: int | None = None, feed_path: str = PARQUET_DIRECT) -> dict[str, Any]:
    """Run `trainer` through `tfspark.driver.runner.run_trainer` in this process; return the training summary.

    `feed_path` is the path the run must take: `SPARK_ARROW` turns the direct Parquet path off for this run;
    a run that did not take the path asked for is an error (its figures would be mislabelled).
    """
    from tfspark.config import RunConfig
    from tfspark.driver.runner import run_trainer

    output = Path(tempfile.mkdtemp(prefix="probe-", dir=workdir))
    config = RunConfig(
        checkpoint_dir=str(output / "checkpoints"),
        output_dir=str(output),
        num_workers=num_workers,
        cache_memory_bytes=cache_memory_bytes or DEFAULT_CACHE_MEMORY_BYTES,
        log_every=1 << 40,
        trainer_name="feed_benchmark.ArrowFeedProbe",
    )
    if feed_path == SPARK_ARROW:
        spark.conf.set(PARQUET_DIRECT_CONF, "false")
    try:
        summary = run_trainer(spark, trainer, config)
    finally:
        spark.conf.unset(PARQUET_DIRECT_CONF)
        shutil.rmtree(output, ignore_errors=True)
    if summary["feed_path"] != feed_path:
        raise RuntimeError(f"the probe took the {summary['feed_path']} path, not {feed_path}: "
                           f"{summary['feed_path_reason']}")
    return summary


def first_pass_result(summary: dict[str, Any]) -> Measurement:
    """(d1) or (d2), whichever path the run took: from the end of pre_train to the end of the first pass.

    The note splits the time: start (driver plan, Spark job, Python worker, unpickling; on the Spark path
    also filling the cache, as the task measured it), set-up (strategy, feed) and the first pass into
    tensors. On the direct path the cache fills in a background thread during set-up and the first pass.
    """
    name = FIRST_PASS[summary["feed_path"]]
    start, setup = summary["start_seconds"], summary["setup_seconds"]
    first, cache_fill = summary["pass_seconds"][0], summary["cache_fill_seconds"][0]
    if summary["feed_path"] == PARQUET_DIRECT:
        note = (f"start {start:.2f}s + set-up {setup:.2f}s + first pass {first:.2f}s "
                f"(pyarrow → cache in the background: {cache_fill:.2f}s)")
    else:
        note = (f"start {start - cache_fill:.2f}s + Spark → cache {cache_fill:.2f}s + set-up {setup:.2f}s + "
                f"cache → tensors {first:.2f}s")
    return Measurement(name, summary["pass_rows"], start + setup + first, note)


def cached_passes_result(summary: dict[str, Any]) -> Measurement:
    """(d)'s passes after the first: cache → tensors (the same on both paths)."""
    passes = summary["pass_seconds"]
    later = passes[1:] or passes
    return Measurement(CACHED_PASSES, summary["pass_rows"] * len(later), sum(later), "from the cache")


def examples_per_second(run: dict[str, Any]) -> float:
    """Training examples per second of one `ArrowFeedProbe` fit."""
    return run["examples"] / run["seconds"]


def best_training(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest fit of one source, with every round's examples/s."""
    best = max(rounds, key=examples_per_second)
    return {**best, "rounds": [examples_per_second(run) for run in rounds]}
