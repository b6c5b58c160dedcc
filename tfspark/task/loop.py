"""The distributed custom training loop behind `TrainContext.fit` (Keras 3 `model.fit` fails under
`MultiWorkerMirroredStrategy` on this stack), several steps per `tf.function` call between checkpoints, logs
and epoch ends. See docs/tfspark.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from tfspark.task.checkpoint import TrainingCheckpoint
from tfspark.task.tensorboard import TensorBoardLog, current_learning_rate

if TYPE_CHECKING:
    import tensorflow as tf

    from tfspark.task.feed import BatchFeed

LossFn = Callable[[Any, Any], Any]
StepCallback = Callable[[int, float], None]


class FitContext(Protocol):
    """What the loop reads of its `tfspark.TrainContext` (which calls the loop; the loop does not import it)."""

    strategy: Any
    rank: int
    num_workers: int
    epochs: int
    steps_per_epoch: int
    batch_size: int
    checkpoint_dir: str
    checkpoint_every: int
    checkpoint_seconds: float | None
    log_every: int
    feed: BatchFeed | None

    @property
    def is_chief(self) -> bool: ...

    @property
    def total_steps(self) -> int: ...

    @property
    def replicas_per_worker(self) -> int: ...


logger = logging.getLogger("tfspark")


def _ensure_built(strategy: Any, model: Any, optimizer: Any, dataset: tf.data.Dataset) -> None:
    """Create the model's and the optimizer's variables (under the strategy) before restoring."""
    with strategy.scope():
        if not model.built:
            features, _ = next(iter(dataset.take(1)))
            model(features)
        if not optimizer.built:
            optimizer.build(model.trainable_variables)


def make_train_steps(strategy: Any, model: Any, optimizer: Any, loss_fn: LossFn) -> Any:
    """A `tf.function(iterator, steps)` running `steps` synchronous steps; returns the summed step losses."""
    import tensorflow as tf

    def replica_step(features: Any, labels: Any) -> tf.Tensor:
        with tf.GradientTape() as tape:
            predictions = model(features, training=True)
            loss = tf.nn.compute_average_loss(tf.cast(loss_fn(labels, predictions), tf.float32))
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return loss

    @tf.function
    def train_steps(iterator: Any, steps: tf.Tensor) -> tf.Tensor:
        total = tf.constant(0.0, tf.float32)
        for _ in tf.range(steps):
            per_replica_loss = strategy.run(replica_step, args=next(iterator))
            total += strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica_loss, axis=None)
        return total

    return train_steps


def _steps_until(step: int, every: int) -> int:
    return every - step % every if every > 0 else 1 << 62


def log_progress(rank: int, step: int, total: int, epoch: int, epochs: int, loss: float | None,
                 examples_per_second: float, eta_seconds: float) -> None:
    """The chief's progress line, one format for tfspark's loop and Keras fit (`lakeloop.progress` reads it into
    `lakeloop run`'s live line)."""
    logger.info("rank %d step %d/%d epoch %d/%d loss %s examples/s %.0f ETA %.0f s", rank, step, total, epoch, epochs,
                "n/a" if loss is None else f"{loss:.5f}", examples_per_second, eta_seconds)


def remaining_seconds(step: int, total: int, first_step: int, started: float, now: float) -> float:
    """Seconds left to step `total` at this run's mean step time since it started at `first_step`."""
    return (total - step) * (now - started) / max(step - first_step, 1)


def _checkpoint_due_by_time(ctx: FitContext, last_save: float) -> bool:
    """Whether `ctx.checkpoint_seconds` have passed since the last save. Every worker must call the same
    collectives, so with several workers they agree: a save is due when it is due on any of them."""
    if not ctx.checkpoint_seconds:
        return False
    due = time.monotonic() - last_save >= ctx.checkpoint_seconds
    if ctx.num_workers == 1:
        return due
    import tensorflow as tf

    votes = ctx.strategy.run(lambda: tf.constant(1.0 if due else 0.0))
    return float(ctx.strategy.reduce(tf.distribute.ReduceOp.SUM, votes, axis=None)) > 0


def run_fit(
    ctx: FitContext,
    model: Any,
    optimizer: Any,
    loss_fn: LossFn,
    dataset: tf.data.Dataset,
    on_step_end: StepCallback | None = None,
) -> dict[str, Any]:
    """Train for `ctx.total_steps`, resuming from the latest checkpoint in `ctx.checkpoint_dir`."""
    import tensorflow as tf

    strategy = ctx.strategy
    _ensure_built(strategy, model, optimizer, dataset)
    checkpoint = TrainingCheckpoint(strategy, model, optimizer, ctx.checkpoint_dir, is_chief=ctx.is_chief)
    board = TensorBoardLog(ctx.checkpoint_dir) if ctx.is_chief else None
    try:
        resumed_from = checkpoint.restore()
        step = resumed_from or 0
        loss_sum = float(checkpoint.epoch_loss_sum.numpy()) if resumed_from else 0.0
        loss_steps = int(checkpoint.epoch_loss_steps.numpy()) if resumed_from else 0
        total = ctx.total_steps
        if resumed_from is not None:
            logger.info("rank %d resumes from step %d of %d", ctx.rank, resumed_from, total)
        if ctx.feed is not None:
            ctx.feed.start_batch = step * ctx.replicas_per_worker
        # One replica: the dataset as it is (behind distribute_datasets_from_function the feed's from_generator
        # pipeline costs ~5 ms more a step: bench/train_step_inputs.py); else it already holds per-replica batches.
        iterator = iter(dataset if ctx.replicas_per_worker == 1
                        else strategy.distribute_datasets_from_function(lambda _: dataset))
        train_steps = make_train_steps(strategy, model, optimizer, loss_fn)
        epoch_metrics: list[dict[str, float]] = []
        log_step, log_time = step, time.monotonic()
        first_step, started, last_save = step, log_time, log_time
        epoch_step, epoch_time = step, log_time
        while step < total:
            # Every worker derives the chunk from the global step alone, so all of them call the same collectives.
            chunk = min(
                total - step,
                _steps_until(step, ctx.steps_per_epoch),
                _steps_until(step, ctx.checkpoint_every),
                _steps_until(step, ctx.log_every),
                1 if on_step_end is not None else total,
            )
            chunk_loss = float(train_steps(iterator, tf.constant(chunk, tf.int64)))
            step += chunk
            loss_sum += chunk_loss
            loss_steps += chunk
            epoch_done = step % ctx.steps_per_epoch == 0
            now = time.monotonic()
            if board is not None and (step % ctx.log_every == 0 or epoch_done or step == total):
                rate = (step - log_step) * ctx.batch_size / max(now - log_time, 1e-9)
                log_progress(ctx.rank, step, total, -(-step // ctx.steps_per_epoch), ctx.epochs, loss_sum / loss_steps,
                             rate, remaining_seconds(step, total, first_step, started, now))
                board.scalars(step, {"loss": loss_sum / loss_steps, "examples_per_second": rate,
                                     "learning_rate": current_learning_rate(optimizer)})
                log_step, log_time = step, now
            if epoch_done:
                epoch_metrics.append({
                    "epoch": -(-step // ctx.steps_per_epoch),
                    "loss": loss_sum / loss_steps,
                    "examples_per_second": (step - epoch_step) * ctx.batch_size / max(now - epoch_time, 1e-9),
                })
                epoch_step, epoch_time = step, now
            if epoch_done and step < total:
                loss_sum, loss_steps = 0.0, 0
            if step % ctx.checkpoint_every == 0 or step == total or _checkpoint_due_by_time(ctx, last_save):
                checkpoint.save(step, loss_sum, loss_steps)
                last_save = time.monotonic()
                if board is not None:
                    board.flush()
            if on_step_end is not None:
                on_step_end(step, chunk_loss / chunk)
        final_loss = loss_sum / loss_steps if loss_steps else None
        fit_seconds = time.monotonic() - started
        return {
            "loss": final_loss,
            "global_step": step,
            "resumed_from_step": resumed_from,
            "epoch_losses": [epoch["loss"] for epoch in epoch_metrics],
            "epoch_metrics": epoch_metrics,
            "tensorboard_dir": board.url if board is not None else None,
            "fit_seconds": round(fit_seconds, 3),
            "examples_per_second": round((step - first_step) * ctx.batch_size / max(fit_seconds, 1e-9), 1),
        }
    finally:
        checkpoint.close()
        if board is not None:
            board.close()
