"""`TrainContext`: what a worker's `train` knows about the cluster and the run, plus `fit` and `save_model`, and
for Keras `model.fit` (`TFSparkTrainer.keras_fit`) `backup_dir` and `keras_fit_callback`.

Built in every barrier task; `fit` runs the task side's training loop (`tfspark.task.loop`). See docs/tfspark.md.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tfspark.storage import RemoteDirectory
from tfspark.task.keras_fit import backup_directory, fit_callback
from tfspark.task.loop import LossFn, StepCallback, run_fit

if TYPE_CHECKING:
    import tensorflow as tf

    from tfspark.task.feed import BatchFeed

__all__ = ["LossFn", "StepCallback", "TrainContext"]

logger = logging.getLogger("tfspark")


@dataclass
class TrainContext:
    """What a worker's `train` needs to know about the cluster and the run, plus the training helpers.

    `batch_size` is the global batch; each worker's dataset yields `per_worker_batch_size` rows per batch
    and exactly `steps_per_epoch * epochs` steps' worth of batches, the same on every worker. For a `keras_fit`
    trainer its batches hold `batch_size` rows instead, as `model.fit` under a strategy expects: fit splits each
    over the workers' replicas, so a step still trains `per_worker_batch_size` of this worker's rows.
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
    checkpoint_seconds: float | None = None
    log_every: int = 100
    rows: int = 0
    keras_fit: bool = False
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
            "epoch_losses": [mean loss of each epoch finished in this run], "fit_seconds": the loop's seconds
            (checkpoints included), "examples_per_second": examples trained in this run / fit_seconds}`.
        """
        if self.keras_fit:
            raise RuntimeError(
                "ctx.fit is tfspark's own loop, but this trainer sets keras_fit = True, so its dataset is batched "
                "for Keras model.fit: call model.fit (docs/tfspark.md, Keras fit) or set keras_fit = False"
            )
        self.fit_result = run_fit(self, model, optimizer, loss_fn, dataset, on_step_end)
        return self.fit_result

    @property
    def backup_dir(self) -> str:
        """Where `tf.keras.callbacks.BackupAndRestore(ctx.backup_dir)` keeps `model.fit`'s state:
        `<checkpoint_dir>/keras-backup`, the same for every attempt, so a rerun (Spark's retry of the stage, or a
        new application on the same checkpoint directory) resumes from the last epoch backed up."""
        return backup_directory(self.checkpoint_dir)

    def keras_fit_callback(self) -> Any:
        """A Keras callback for `model.fit(..., callbacks=[..., ctx.keras_fit_callback()])`: it logs each epoch on
        the chief and fills `fit_result`, so the training summary gets fit's `loss`, `global_step`,
        `epochs_trained`, `stopped_early` and `resumed_from_step`/`resumed_from_epoch` (BackupAndRestore's)."""
        return fit_callback(self)

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
