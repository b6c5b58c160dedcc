"""The user API: subclass `TFSparkTrainer` (`pre_train` on the driver, `train` in every barrier task, `shutdown`).

The trainer is pickled to the tasks after `pre_train`: keep the SparkSession and DataFrames off `self`.
See docs/tfspark.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tfspark.context import TrainContext

if TYPE_CHECKING:
    import tensorflow as tf
    from pyspark.sql import DataFrame, SparkSession


class TFSparkTrainer:
    """Base class of a TF-on-Spark training job; subclass it and override `pre_train` and `train`.

    Class attributes configure the runtime: `batch_size` is the global batch size (split evenly across
    workers), `epochs` the number of passes, `label_column` the DataFrame column used as the label (all
    others are features), `checkpoint_every` the steps between checkpoints and `checkpoint_seconds` (None: off) the
    longest time between them, `shuffle`/`seed` the feed's per-pass shuffling. A run's `--checkpoint-every` and
    `--checkpoint-seconds` override the two.

    `keras_fit = True` says `train` trains with Keras `model.fit` instead of `ctx.fit`: every task then routes
    `tf.keras` to tf-keras (Keras 2, `TF_USE_LEGACY_KERAS=1` set before TensorFlow is imported; Keras 3's fit fails
    under `MultiWorkerMirroredStrategy`) and hands `train` a dataset batched for fit. Build the model with
    `tf.keras` (or `import tf_keras`), not `import keras`; `ctx.backup_dir` and `ctx.keras_fit_callback()` serve fit.
    """

    batch_size: int = 1024
    epochs: int = 1
    label_column: str = "label"
    checkpoint_every: int = 200
    checkpoint_seconds: float | None = None
    shuffle: bool = True
    seed: int = 0
    keras_fit: bool = False

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
