"""The FM trainer run by `tfspark-submit`: Spark reads the day's training examples, TensorFlow fits the FM.

Trainer arguments (`--trainer-arg KEY=VALUE`): `lake` (URL) and `day` (YYYY-MM-DD) name the feature
partition `<lake>/features/dt=D/` (its `train/` examples and its spec); any field of
`jobs.fm_model.FMHyperParameters` (`factors`, `l2`, `learning_rate`, `batch_size`, `epochs`, `seed`)
overrides its default. The hyper-parameters and vocabulary sizes join the training summary (and so the
MLflow run's params).
"""

from __future__ import annotations

from datetime import date

from jobs.common import read_table, use_lake
from jobs.feature_spec import FEATURE_COLUMNS, FEATURES, LABEL, TRAIN, FeatureSpec, read_feature_spec
from jobs.fm_model import FMHyperParameters
from lakeloop.lake import Lake
from tfspark import TFSparkTrainer, TrainContext


def squared_error(labels, predictions):
    """Per-example squared error (the runtime averages it over the global batch)."""
    from keras import ops

    return ops.square(ops.cast(labels, predictions.dtype) - predictions)


def take_weight_l2(model) -> list[float]:
    """Remove the L2 regularizers from the model's trainable variables; return each variable's L2 factor (0 if none).

    `fused_adam` adds their gradient itself, after the workers' gradients are summed: the L2 of a whole
    embedding table has a dense gradient, so as part of the loss it made every step's all-reduce carry every
    row of the user tables (1.6 MB a step at 12K users, 16 MB at 120K), while the gradient of the data loss
    only has the rows of the batch. Every worker holds the same weights, so each can add 2·l2·w itself: the
    update is unchanged. The logged training loss no longer includes the L2 penalty.
    """
    import keras

    factors = []
    for variable in model.trainable_variables:
        regularizer = variable.regularizer
        if regularizer is not None and not isinstance(regularizer, keras.regularizers.L2):
            raise ValueError(f"{variable.path}: only L2 regularizers can move to the optimizer, got {regularizer}")
        factors.append(float(regularizer.l2) if regularizer is not None else 0.0)
        variable.regularizer = None
    return factors


SPARSE_ALL_REDUCE_BYTES = 4 << 20


def dense_unless_large(gradient, variable):
    """A sparse gradient (an embedding's looked-up rows) as a dense tensor, unless its variable is larger than
    `SPARSE_ALL_REDUCE_BYTES`.

    The workers sum dense gradients in one packed all-reduce, and sparse ones with an all-gather of their own
    (rows and values, a few collectives each): with two workers a step took 8.6 ms with dense user tables of
    12K rows and 16.4 ms with sparse ones, but 64 ms dense and 29 ms sparse at 120K rows.
    """
    import math

    import tensorflow as tf

    if not isinstance(gradient, tf.IndexedSlices):
        return gradient
    size = math.prod(variable.shape) * gradient.values.dtype.size
    return tf.convert_to_tensor(gradient) if size <= SPARSE_ALL_REDUCE_BYTES else gradient


def fused_adam(learning_rate: float, weight_l2: list[float]):
    """Keras' Adam plus the L2 gradient of `weight_l2` (per trainable variable, from `take_weight_l2`), each update
    done by TensorFlow's fused, in-place kernel (`ResourceApplyAdam`).

    The same update as `keras.optimizers.Adam` on a loss with the L2 penalty (moments, bias correction, epsilon
    outside the square root), in one pass over a variable instead of about ten element-wise operations with a
    new tensor each: a step cost 2.6 ms at 13K users and 22–35 ms at 130K with Keras' update, 1.7 and 14–17 ms
    fused (one process). The whole-table L2 still makes every step update every row of the user tables, so
    the step still grows with the users of the day (see the README's Performance section).
    """
    import keras
    import tensorflow as tf

    class FusedAdam(keras.optimizers.Adam):
        def apply_gradients(self, grads_and_vars):
            """Densify the sparse gradients of small tables before the workers' gradients are summed."""
            return super().apply_gradients([(dense_unless_large(gradient, variable), variable)
                                            for gradient, variable in grads_and_vars])

        def update_step(self, gradient, variable, learning_rate):
            if self.amsgrad:
                raise ValueError("fused_adam does not do AMSGrad")
            dtype = variable.dtype
            value = variable.value if isinstance(variable, keras.Variable) else variable
            index = self._get_variable_index(variable)
            gradient = tf.convert_to_tensor(gradient, dtype)
            if weight_l2[index]:
                gradient += 2.0 * weight_l2[index] * value
            step = tf.cast(self.iterations + 1, dtype)
            tf.raw_ops.ResourceApplyAdam(
                var=value.handle, m=self._momentums[index].value.handle, v=self._velocities[index].value.handle,
                beta1_power=tf.pow(tf.cast(self.beta_1, dtype), step),
                beta2_power=tf.pow(tf.cast(self.beta_2, dtype), step), lr=tf.cast(learning_rate, dtype),
                beta1=tf.cast(self.beta_1, dtype), beta2=tf.cast(self.beta_2, dtype),
                epsilon=tf.cast(self.epsilon, dtype), grad=gradient)

    return FusedAdam(learning_rate)


class FMTrainer(TFSparkTrainer):
    """Fits the factorization machine on the training examples of a day's feature partition."""

    label_column = LABEL

    def __init__(self, **kwargs: str) -> None:
        super().__init__(**kwargs)
        self.lake_url = kwargs.pop("lake")
        self.day = date.fromisoformat(kwargs.pop("day"))
        self.hparams = FMHyperParameters.from_args(kwargs)
        self.batch_size = self.hparams.batch_size
        self.epochs = self.hparams.epochs
        self.seed = self.hparams.seed
        self.spec: FeatureSpec | None = None

    def pre_train(self, spark):
        """The partition's training examples (model inputs and label): a plain scan of the files its manifest
        names, which tfspark's direct Parquet path reads; keeps the partition's spec for `train`."""
        lake = Lake.from_url(self.lake_url)
        use_lake(spark, lake)
        self.spec = read_feature_spec(lake, self.day)
        return read_table(spark, lake, FEATURES, self.day, TRAIN).select(*FEATURE_COLUMNS, LABEL)

    def train(self, dataset, ctx: TrainContext) -> dict:
        """Fit the FM with the runtime's distributed loop, then save it for evaluation."""
        import keras

        from jobs.fm_model import build_fm_model

        keras.utils.set_random_seed(self.hparams.seed)
        with ctx.strategy.scope():
            model = build_fm_model(self.spec, self.hparams)
            optimizer = fused_adam(self.hparams.learning_rate, take_weight_l2(model))
        result = ctx.fit(model, optimizer, squared_error, dataset)
        ctx.save_model(model)
        return {**self.hparams.as_params(), "user_vocab_size": self.spec.user_vocab_size,
                "item_vocab_size": self.spec.item_vocab_size, **result}
