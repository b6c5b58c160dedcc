"""The tiny rating model of `tiny_trainer`, trained with Keras `model.fit` (`keras_fit = True`): the Keras fit tests.

Like a user's module, it imports TensorFlow and defines its Keras classes at import time, so unpickling the
trainer in a task resolves `tf.keras`: tfspark must have chosen tf-keras before that. On the driver (no choice
made) the same classes derive from Keras 3; only the tasks build and train the model.

Trainer args besides `tiny_trainer`'s: `epochs`; `early_stop` (1: an EarlyStopping whose `min_delta` no epoch
reaches, so it stops after the second epoch whatever the loss); `epoch_log` (a directory where `EpochLog` appends
each worker's epochs to `rank-<rank>.log`); `fail_at_epoch` with `fail_rank` and `fail_marker` (that worker dies
once at the end of that epoch, after BackupAndRestore backed it up).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tensorflow as tf
from tiny_trainer import TinyRatingsTrainer

from tfspark import TrainContext


class ExamplesSeen(tf.keras.metrics.Sum):
    """Counts the examples an epoch trained on (summed over every replica of the cluster)."""

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        return super().update_state(tf.ones_like(y_true, dtype=self.dtype))


class EpochLog(tf.keras.callbacks.Callback):
    """A custom callback: appends `start` when fit starts, then `<epoch> <loss> <examples>` after each epoch, to
    `<epoch_log>/rank-<rank>.log`; kills its worker where the trainer's `fail_at_epoch` says."""

    def __init__(self, trainer: TinyKerasTrainer, rank: int) -> None:
        super().__init__()
        self.trainer = trainer
        self.rank = rank
        directory = trainer.args.get("epoch_log")
        self.path = Path(directory) / f"rank-{rank}.log" if directory else None

    def _write(self, line: str) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as log:
                log.write(line + "\n")

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._write("start")

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._write(f"{epoch} {float(logs['loss'])!r} {float(logs['examples'])!r}")
        args = self.trainer.args
        if "fail_at_epoch" in args and (epoch, self.rank) == (int(args["fail_at_epoch"]), int(args["fail_rank"])):
            self.trainer.fail_once(f"epoch {epoch}")


class TinyKerasTrainer(TinyRatingsTrainer):
    """`TinyRatingsTrainer`'s data and model, compiled and trained by Keras `model.fit` on every worker."""

    keras_fit = True

    def train(self, dataset: Any, ctx: TrainContext) -> dict[str, Any]:
        tf.keras.utils.set_random_seed(7)
        with ctx.strategy.scope():
            model = self.build_model(tf.keras)
            model.compile(
                optimizer=tf.keras.optimizers.Adam(0.05), loss="mse", metrics=[ExamplesSeen(name="examples")]
            )
        callbacks = [tf.keras.callbacks.BackupAndRestore(ctx.backup_dir)]
        if self.args.get("early_stop") == "1":
            callbacks.append(tf.keras.callbacks.EarlyStopping(monitor="loss", min_delta=1e9, patience=1))
        callbacks += [EpochLog(self, ctx.rank), ctx.keras_fit_callback()]
        history = model.fit(
            dataset, epochs=ctx.epochs, steps_per_epoch=ctx.steps_per_epoch, callbacks=callbacks, verbose=0
        )
        ctx.save_model(model)
        return {"model_class": f"{type(model).__module__}.{type(model).__name__}", "history_epochs": history.epoch}
