"""Keras `model.fit` in a barrier task (`TFSparkTrainer.keras_fit`): tf-keras chosen before TensorFlow is imported,
the BackupAndRestore directory, and the callback that logs fit's progress on the chief and records what it did
for the training summary. See docs/tfspark.md ("Keras fit").
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import time
from typing import Any, Protocol

from tfspark.storage import RemoteDirectory
from tfspark.task.loop import log_progress, remaining_seconds

logger = logging.getLogger("tfspark")
LEGACY_KERAS_VARIABLE = "TF_USE_LEGACY_KERAS"
BACKUP_SUBDIR = "keras-backup"


class KerasFitContext(Protocol):
    """What the callback reads of its `tfspark.TrainContext` (which calls this module; this module does not import
    it) and the `fit_result` it fills."""

    rank: int
    epochs: int
    batch_size: int
    fit_result: dict[str, Any] | None

    @property
    def is_chief(self) -> bool: ...

    @property
    def total_steps(self) -> int: ...


def use_legacy_keras() -> None:
    """Route `tf.keras` to tf-keras (Keras 2) in this process, whose `model.fit` trains under
    `MultiWorkerMirroredStrategy` (Keras 3's does not). TensorFlow reads the choice when it is imported, so this
    must run first; raise, saying what to do, when TensorFlow was already imported with Keras 3 or tf-keras is
    missing."""
    tensorflow = sys.modules.get("tensorflow")
    if tensorflow is not None and not getattr(tensorflow, "_tf_uses_legacy_keras", False):
        raise RuntimeError(
            "a keras_fit trainer needs tf-keras, chosen before TensorFlow is imported, but this Python worker "
            "already imported TensorFlow with Keras 3 (a reused Python worker, or a module imported at start-up); "
            "run the job with spark.python.worker.reuse=false (tfspark-submit does) and nothing importing "
            "TensorFlow before the task starts"
        )
    if importlib.util.find_spec("tf_keras") is None:
        raise RuntimeError(
            "a keras_fit trainer trains with tf-keras, which is not installed in the executors' Python "
            f"({sys.executable}): install tf-keras at TensorFlow's version (pip install tf-keras==2.21.0)"
        )
    os.environ[LEGACY_KERAS_VARIABLE] = "1"


def backup_directory(checkpoint_dir: str) -> str:
    """`<checkpoint_dir>/keras-backup`, for `tf.keras.callbacks.BackupAndRestore`; refuse, saying what to do, a
    directory TensorFlow's file systems cannot write (s3:// without tensorflow-io), where it could not back up."""
    if RemoteDirectory.for_url(checkpoint_dir) is None:
        return os.path.join(checkpoint_dir, BACKUP_SUBDIR)
    import tensorflow as tf

    path = f"{checkpoint_dir.rstrip('/')}/{BACKUP_SUBDIR}"
    try:
        tf.io.gfile.makedirs(path)
    except tf.errors.UnimplementedError as error:
        raise ValueError(
            f"BackupAndRestore writes through TensorFlow's file systems, which cannot write {path} ({error.message}); "
            "give a keras_fit run a --checkpoint-dir on local or shared disk, or on a file system TensorFlow "
            "writes (gs://, hdfs://)"
        ) from error
    return path


def fit_callback(ctx: KerasFitContext) -> Any:
    """A `tf.keras.callbacks.Callback` reporting a `model.fit` to tfspark: a progress line per epoch on the chief,
    and at the end `ctx.fit_result` (the training summary's loss, global step, epochs trained, resumed or not)."""
    import tensorflow as tf

    class FitReport(tf.keras.callbacks.Callback):
        """Reads the step count from the optimizer: BackupAndRestore restores it with the model, so the first
        epoch's count tells whether (and from where) this fit resumed."""

        def __init__(self) -> None:
            super().__init__()
            self.started = time.monotonic()
            self.first_step: int | None = None
            self.first_epoch = 0
            self.epoch_step, self.epoch_time = 0, self.started
            self.epochs_trained = 0
            self.epoch_losses: list[float] = []
            self.epoch_metrics: list[dict[str, float]] = []

        def _global_step(self) -> int:
            return int(self.model.optimizer.iterations.numpy())

        def _begin(self, epoch: int) -> None:
            self.first_step, self.first_epoch = self._global_step(), epoch
            self.epochs_trained = epoch
            if self.first_step:
                logger.info("rank %d resumes from step %d (epoch %d) of %d", ctx.rank, self.first_step, epoch,
                            ctx.total_steps)

        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            self.started = time.monotonic()

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if self.first_step is None:
                self._begin(epoch)
            self.epoch_step, self.epoch_time = self._global_step(), time.monotonic()

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            step, now = self._global_step(), time.monotonic()
            loss = (logs or {}).get("loss")
            rate = (step - self.epoch_step) * ctx.batch_size / max(now - self.epoch_time, 1e-9)
            self.epochs_trained = epoch + 1
            if loss is not None:
                self.epoch_losses.append(float(loss))
            self.epoch_metrics.append({"epoch": epoch + 1, "loss": None if loss is None else float(loss),
                                       "examples_per_second": rate})
            if ctx.is_chief:
                log_progress(ctx.rank, step, ctx.total_steps, epoch + 1, ctx.epochs,
                             None if loss is None else float(loss), rate,
                             remaining_seconds(step, ctx.total_steps, self.first_step or 0, self.started, now))

        def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
            if self.first_step is None:  # resumed after the last epoch: fit ran none
                self._begin(ctx.epochs)
            step, seconds = self._global_step(), time.monotonic() - self.started
            resumed = bool(self.first_step)
            ctx.fit_result = {
                "loss": self.epoch_losses[-1] if self.epoch_losses else None,
                "global_step": step,
                "resumed_from_step": self.first_step if resumed else None,
                "resumed_from_epoch": self.first_epoch if resumed else None,
                "epochs_trained": self.epochs_trained,
                "stopped_early": bool(self.model.stop_training),
                "epoch_losses": self.epoch_losses,
                "epoch_metrics": self.epoch_metrics,
                "fit_seconds": round(seconds, 3),
                "examples_per_second": round((step - (self.first_step or 0)) * ctx.batch_size / max(seconds, 1e-9), 1),
            }

    return FitReport()
