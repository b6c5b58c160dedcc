"""Checkpoints for resumable training: restore the latest on start, save every K steps and at the end.

Under `MultiWorkerMirroredStrategy` every worker must take part in a save, but only the chief's copy is
kept: the others write to a throwaway directory, as TensorFlow's multi-worker guide prescribes. Every
worker restores from the chief's directory, which must therefore be shared storage on a real cluster
(local disk is enough for local Spark).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:
    import tensorflow as tf


def url_to_path(url: str) -> str:
    """A `file://` URL or bare path → an absolute local path; other schemes are left to TensorFlow."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return os.path.abspath(parsed.path)
    if parsed.scheme == "" or len(parsed.scheme) == 1:
        return os.path.abspath(url)
    return url


class TrainingCheckpoint:
    """A `tf.train.Checkpoint` of model, optimizer, global step and the running epoch loss.

    It creates its own variables under `strategy.scope()`. The model and the optimizer must already be
    built, so that restoring fills existing variables instead of deferring.
    """

    def __init__(
        self,
        strategy: tf.distribute.Strategy,
        model: Any,
        optimizer: Any,
        checkpoint_dir: str,
        *,
        is_chief: bool,
        max_to_keep: int = 3,
    ) -> None:
        import tensorflow as tf

        self.checkpoint_dir = checkpoint_dir
        self._scratch_dir = None if is_chief else tempfile.mkdtemp(prefix="tfspark-ckpt-")
        with strategy.scope():
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
            self.epoch_loss_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="epoch_loss_sum")
            self.epoch_loss_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch_loss_steps")
        self._checkpoint = tf.train.Checkpoint(
            model=model,
            optimizer=optimizer,
            step=self.step,
            epoch_loss_sum=self.epoch_loss_sum,
            epoch_loss_steps=self.epoch_loss_steps,
        )
        self._manager = tf.train.CheckpointManager(
            self._checkpoint, self._scratch_dir or checkpoint_dir, max_to_keep=max_to_keep
        )

    def restore(self) -> int | None:
        """Restore the chief's latest checkpoint, if any; return its step (None on a fresh start)."""
        import tensorflow as tf

        latest = tf.train.latest_checkpoint(self.checkpoint_dir)
        if latest is None:
            return None
        self._checkpoint.restore(latest).assert_existing_objects_matched()
        return int(self.step.numpy())

    def save(self, step: int, epoch_loss_sum: float, epoch_loss_steps: int) -> str:
        """Save the state after `step` steps (every worker calls this; only the chief's copy stays)."""
        self.step.assign(step)
        self.epoch_loss_sum.assign(epoch_loss_sum)
        self.epoch_loss_steps.assign(epoch_loss_steps)
        return self._manager.save(checkpoint_number=step)

    def close(self) -> None:
        """Delete a non-chief's throwaway directory."""
        if self._scratch_dir is not None:
            shutil.rmtree(self._scratch_dir, ignore_errors=True)
            self._scratch_dir = None
