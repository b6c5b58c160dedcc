"""A trainer's `train` run in this process on examples held in numpy, with a plain `tf.function` step and no
distribution strategy: the limit a training job is measured against (`bench.training`).

The trainer builds its model, optimizer and loss as in a job (its own `train`); only `fit` differs:
`InMemoryContext.fit` feeds shuffled in-memory batches, either by a Python loop over numpy slices or by a `tf.data`
pipeline iterated inside one `tf.function` per epoch. What the trainer maps over its dataset (`dataset.map(fn)`, a
function of a batch's features and labels) is applied to every batch: in the step's graph on the numpy loop, in the
pipeline (tf.data's threads, ahead of the step) on `tf.data`, as the job's dataset does.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tfspark import TrainContext

if TYPE_CHECKING:
    import pyarrow as pa

    from tfspark import TFSparkTrainer

NUMPY_LOOP = "numpy slices, Python loop"
TF_DATA = "tf.data gathering whole batches from column tensors, tf.range loop in tf.function"
FEEDS = (NUMPY_LOOP, TF_DATA)


@dataclass(frozen=True)
class InMemoryExamples:
    """Model inputs (one array per input) and labels, the same rows in the same order, and the functions mapped
    over their batches (`map`)."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray
    batch_maps: tuple[Callable, ...] = ()

    @classmethod
    def from_arrow(cls, table: pa.Table, label_column: str) -> InMemoryExamples:
        """A trainer's examples (what its `pre_train` selects, as Arrow) as the model's input arrays."""
        from lakeloop.features import model_inputs

        features = table.drop_columns([label_column])
        return cls(model_inputs(features), table.column(label_column).to_numpy().astype(np.float32))

    @property
    def rows(self) -> int:
        """How many examples."""
        return len(self.labels)

    def map(self, batch_map: Callable) -> InMemoryExamples:
        """These examples with `batch_map(features, labels) -> (features, labels)` applied to every batch, as
        `tf.data.Dataset.map` on the job's batched dataset."""
        return dataclasses.replace(self, batch_maps=(*self.batch_maps, batch_map))

    def mapped(self, features: Any, labels: Any) -> tuple[Any, Any]:
        """A batch after the functions of `map`."""
        for batch_map in self.batch_maps:
            features, labels = batch_map(features, labels)
        return features, labels

    def order(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """`count` example indices in a random order: a permutation of all of them, wrapped around to fill `count`."""
        return np.resize(rng.permutation(self.rows), count)

    def taken(self, order: np.ndarray) -> InMemoryExamples:
        """The examples at `order`, in that order."""
        return dataclasses.replace(self, inputs={name: values[order] for name, values in self.inputs.items()},
                                   labels=self.labels[order])


@dataclass
class InMemoryContext(TrainContext):
    """A one-process `TrainContext` whose `fit` trains on `InMemoryExamples` with the feed `feed_kind` (one of
    `FEEDS`); `fit_seconds` is the time of the training loop alone (tracing included, saving excluded)."""

    feed_kind: str = NUMPY_LOOP
    seed: int = 0
    fit_seconds: float = 0.0
    steps_done: int = 0

    def fit(self, model: Any, optimizer: Any, loss_fn: Any, dataset: Any, on_step_end: Any = None) -> dict[str, Any]:
        """Train `model` for `epochs` × `steps_per_epoch` steps of `batch_size` examples of `dataset`."""
        import tensorflow as tf

        if not isinstance(dataset, InMemoryExamples):
            raise TypeError(f"InMemoryContext.fit trains on InMemoryExamples, got {type(dataset).__name__}")
        if not optimizer.built:
            optimizer.build(model.trainable_variables)

        def step(inputs: dict, labels: Any) -> Any:
            with tf.GradientTape() as tape:
                predictions = model(inputs, training=True)
                loss = tf.reduce_mean(tf.cast(loss_fn(labels, predictions), tf.float32))
                if model.losses:
                    loss += tf.add_n(model.losses)
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
            return loss

        rng = np.random.default_rng(self.seed)
        orders = [dataset.order(rng, self.steps_per_epoch * self.batch_size) for _ in range(self.epochs)]
        run = _numpy_loop if self.feed_kind == NUMPY_LOOP else _tf_data_pipeline
        started = time.monotonic()
        epoch_losses = [loss / self.steps_per_epoch for loss in run(step, dataset, orders, self.batch_size)]
        self.fit_seconds = time.monotonic() - started
        self.steps_done = self.total_steps
        self.fit_result = {"loss": epoch_losses[-1], "global_step": self.total_steps, "resumed_from_step": None,
                           "epoch_losses": epoch_losses}
        return self.fit_result


def _numpy_loop(step: Any, examples: InMemoryExamples, orders: list[np.ndarray], batch_size: int) -> list[float]:
    """Each epoch's examples copied in its order, then one `tf.function` step call per numpy slice."""
    import tensorflow as tf

    train_step = tf.function(lambda inputs, labels: step(*examples.mapped(inputs, labels)))
    losses = []
    for order in orders:
        epoch = examples.taken(order)
        losses.append(float(tf.add_n([
            train_step({name: values[start:start + batch_size] for name, values in epoch.inputs.items()},
                       epoch.labels[start:start + batch_size])
            for start in range(0, epoch.rows, batch_size)])))
    return losses


def _tf_data_pipeline(step: Any, examples: InMemoryExamples, orders: list[np.ndarray],
                      batch_size: int) -> list[float]:
    """One `tf.data` pipeline for the whole run: each batch gathered from whole-column tensors by the epochs' orders
    (the mapped functions after it, on tf.data's threads), pulled by a `tf.range` loop in one `tf.function` call an
    epoch."""
    import tensorflow as tf

    # Steps pulled from an iterator in a tf.range loop: a `for` over the dataset itself becomes a dataset scan,
    # whose body runs inside tf.data's runtime, slower.
    @tf.function
    def train_steps(iterator: Any, steps: Any) -> Any:
        total = tf.constant(0.0, tf.float32)
        for _ in tf.range(steps):
            total += step(*next(iterator))
        return total

    inputs = {name: tf.constant(values) for name, values in examples.inputs.items()}
    labels = tf.constant(examples.labels)

    def gather(rows: Any) -> tuple[Any, Any]:
        return examples.mapped({name: tf.gather(values, rows) for name, values in inputs.items()},
                               tf.gather(labels, rows))

    steps = len(orders[0]) // batch_size
    batches = np.concatenate(orders).reshape(-1, batch_size)
    dataset = tf.data.Dataset.from_tensor_slices(batches).map(gather, num_parallel_calls=tf.data.AUTOTUNE)
    iterator = iter(dataset.prefetch(tf.data.AUTOTUNE))
    return [float(train_steps(iterator, tf.constant(steps, tf.int64))) for _ in orders]


@dataclass(frozen=True)
class LimitRun:
    """One in-memory training run: its feed, batch size, examples trained, loop seconds and the saved model."""

    feed: str
    batch_size: int
    examples: int
    fit_seconds: float
    model_path: Path
    hparams: dict

    @property
    def examples_per_second(self) -> float:
        """Examples trained per second of the training loop."""
        return self.examples / self.fit_seconds


def train_in_memory(trainer: TFSparkTrainer, examples: InMemoryExamples, feed: str, output_dir: Path) -> LimitRun:
    """Run `trainer.train` on `examples` in this process with `InMemoryContext` and the feed `feed`; the model is
    saved to `output_dir/model.keras` by the trainer, as in a job."""
    import tensorflow as tf

    if feed not in FEEDS:
        raise ValueError(f"feed must be one of {FEEDS}, got {feed!r}")
    steps_per_epoch = max(1, math.ceil(examples.rows / trainer.batch_size))
    with tempfile.TemporaryDirectory(prefix="bench-training-checkpoints-") as checkpoints:
        ctx = InMemoryContext(strategy=tf.distribute.get_strategy(), rank=0, num_workers=1,
                              steps_per_epoch=steps_per_epoch, epochs=trainer.epochs, batch_size=trainer.batch_size,
                              per_worker_batch_size=trainer.batch_size, checkpoint_dir=checkpoints,
                              output_dir=str(output_dir), rows=examples.rows, feed_kind=feed, seed=trainer.seed)
        result = trainer.train(examples, ctx) or {}
    return LimitRun(feed=feed, batch_size=trainer.batch_size, examples=ctx.steps_done * trainer.batch_size,
                    fit_seconds=ctx.fit_seconds, model_path=output_dir / "model.keras",
                    hparams={key: value for key, value in result.items() if isinstance(value, int | float | str)})
