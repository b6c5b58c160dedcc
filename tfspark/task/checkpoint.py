"""Resumable training: restore the chief's latest checkpoint, save every K steps and at the end.

Only the chief's copy is kept; a checkpoint directory on an object store is mirrored locally and uploaded,
the index file last (one PUT: the commit). See docs/tfspark.md.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

from tfspark.storage import RemoteDirectory

if TYPE_CHECKING:
    import tensorflow as tf


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
        self._remote = RemoteDirectory.for_url(checkpoint_dir)
        self._mirror_dir = tempfile.mkdtemp(prefix="tfspark-ckpt-mirror-") if self._remote else None
        self._local_dir = self._mirror_dir or checkpoint_dir
        self._is_chief = is_chief
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
            self._checkpoint, self._scratch_dir or self._local_dir, max_to_keep=max_to_keep
        )

    def restore(self) -> int | None:
        """Restore the chief's latest checkpoint, if any; return its step (None on a fresh start)."""
        import tensorflow as tf

        if self._remote:
            self._remote.download_to(self._mirror_dir)
        latest = tf.train.latest_checkpoint(self._local_dir)
        if latest is None:
            return None
        self._checkpoint.restore(latest).assert_existing_objects_matched()
        return int(self.step.numpy())

    def save(self, step: int, epoch_loss_sum: float, epoch_loss_steps: int) -> str:
        """Save the state after `step` steps (every worker calls this; only the chief's copy stays)."""
        self.step.assign(step)
        self.epoch_loss_sum.assign(epoch_loss_sum)
        self.epoch_loss_steps.assign(epoch_loss_steps)
        path = self._manager.save(checkpoint_number=step)
        if self._remote and self._is_chief:
            self._remote.upload_from(self._mirror_dir, os.path.basename(path))
            return f"{self.checkpoint_dir.rstrip('/')}/{os.path.basename(path)}"
        return path

    def close(self) -> None:
        """Delete a non-chief's throwaway directory and the local mirror of a remote checkpoint directory."""
        for directory in (self._scratch_dir, self._mirror_dir):
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)
        self._scratch_dir = self._mirror_dir = None
