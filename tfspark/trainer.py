"""The user API: subclass `TFSparkTrainer`; `train` receives a `TrainContext`.

A trainer is three methods. `pre_train(spark)` runs on the Spark driver and returns the training
DataFrame (full Spark API: read the lake, join, compute features). `train(dataset, ctx)` runs in every
barrier task with plain TensorFlow/Keras code: `dataset` is this worker's share as `tf.data` batches and
`ctx` carries the distribution strategy, rank, step counts and paths, plus `ctx.fit` (a resumable
distributed training loop) and `ctx.save_model`. `shutdown()` releases long-lived resources and is always
called on the driver, also after a failure.

The trainer object is pickled from the driver to the tasks after `pre_train`, so attributes set there
(vocabulary sizes, say) reach `train`; keep the SparkSession and DataFrames off `self`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tfspark.storage import RemoteDirectory

if TYPE_CHECKING:
    import tensorflow as tf
    from pyspark.sql import DataFrame, SparkSession

    from tfspark.feed import BatchFeed

logger = logging.getLogger("tfspark")

LossFn = Callable[[Any, Any], Any]
StepCallback = Callable[[int, float], None]


class TFSparkTrainer:
    """Base class of a TF-on-Spark training job; subclass it and override `pre_train` and `train`.

    Class attributes configure the runtime: `batch_size` is the global batch size (split evenly across
    workers), `epochs` the number of passes, `label_column` the DataFrame column used as the label (all
    others are features), `checkpoint_every` the steps between checkpoints, `shuffle`/`seed` the feed's
    per-pass shuffling.
    """

    batch_size: int = 1024
    epochs: int = 1
    label_column: str = "label"
    checkpoint_every: int = 200
    shuffle: bool = True
    seed: int = 0

    def __init__(self, **kwargs: str) -> None:
        """Receive the `--trainer-arg KEY=VALUE` pairs (as strings) in `self.args`."""
        self.args: dict[str, str] = dict(kwargs)

    def pre_train(self, spark: SparkSession) -> DataFrame:
        """Build the training DataFrame on the driver: label column plus numeric feature columns."""
        raise NotImplementedError(f"{type(self).__name__} must implement pre_train(spark)")

    def train(self, dataset: tf.data.Dataset, ctx: TrainContext) -> dict[str, Any] | None:
        """Train on this worker's `dataset`; the chief's returned dict joins the training summary."""
        raise NotImplementedError(f"{type(self).__name__} must implement train(dataset, ctx)")

    def shutdown(self) -> None:
        """Release long-lived resources; called on the driver after training, also when it failed."""


@dataclass
class TrainContext:
    """What a worker's `train` needs to know about the cluster and the run, plus the training helpers.

    `batch_size` is the global batch; each worker's dataset yields `per_worker_batch_size` rows per batch
    and exactly `steps_per_epoch * epochs` steps' worth of batches, the same on every worker.
    """

    strategy: Any
    rank: int
    num_workers: int
    steps_per_epoch: int
    epochs: int
    batch_size: int
    per_worker_batch_size: int
    checkpoint_dir: str
    output_dir: str
    checkpoint_every: int = 200
    log_every: int = 100
    rows: int = 0
    feed: BatchFeed | None = field(default=None, repr=False)
    fit_result: dict[str, Any] | None = None

    @property
    def is_chief(self) -> bool:
        """Worker 0 is the chief: it keeps the checkpoints, the saved model and the summary."""
        return self.rank == 0

    @property
    def total_steps(self) -> int:
        """Steps of the whole run: `steps_per_epoch * epochs`."""
        return self.steps_per_epoch * self.epochs

    @property
    def replicas_per_worker(self) -> int:
        """Model replicas on this worker (its GPUs under the strategy, else 1)."""
        return max(1, self.strategy.num_replicas_in_sync // self.num_workers)

    def fit(
        self,
        model: Any,
        optimizer: Any,
        loss_fn: LossFn,
        dataset: tf.data.Dataset,
        on_step_end: StepCallback | None = None,
    ) -> dict[str, Any]:
        """Run the distributed training loop over `dataset` for `total_steps`, resuming from a checkpoint.

        Args:
            model: a Keras model created inside `ctx.strategy.scope()`.
            optimizer: a Keras optimizer (built here if needed, inside the scope).
            loss_fn: `loss_fn(labels, predictions)` returning per-example losses of shape [batch].
            dataset: the dataset `train` received, or one derived from it batch-for-batch (e.g. `.map`).
            on_step_end: optional `callback(step, loss)`, called on every worker after each step and after
                that step's checkpoint, if any (makes the loop run one step per call; leave None for speed).

        Returns:
            `{"loss": mean loss of the final epoch, "global_step": int, "resumed_from_step": int | None,
            "epoch_losses": [mean loss of each epoch finished in this run]}`.
        """
        from tfspark.loop import run_fit

        self.fit_result = run_fit(self, model, optimizer, loss_fn, dataset, on_step_end)
        return self.fit_result

    def save_model(self, model: Any) -> str | None:
        """Save `model` to `<output_dir>/model.keras` on the chief; return that path (None elsewhere).

        Call it on every worker: the others save to a throwaway file, as multi-worker saving requires.
        """
        remote = RemoteDirectory.for_url(self.output_dir)
        if self.is_chief and remote:
            scratch = tempfile.mkdtemp(prefix="tfspark-model-")
            try:
                model.save(os.path.join(scratch, "model.keras"))
                path = remote.put(os.path.join(scratch, "model.keras"), "model.keras")
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            logger.info("saved model to %s", path)
            return path
        if self.is_chief:
            os.makedirs(self.output_dir, exist_ok=True)
            path = os.path.join(self.output_dir, "model.keras")
            partial = os.path.join(self.output_dir, ".model.partial.keras")
            model.save(partial)
            os.replace(partial, path)
            logger.info("saved model to %s", path)
            return path
        scratch = tempfile.mkdtemp(prefix="tfspark-model-")
        try:
            model.save(os.path.join(scratch, "model.keras"))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return None
