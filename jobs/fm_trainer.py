"""The FM trainer run by `tfspark-submit`: Spark reads the day's training examples, TensorFlow fits the FM.

Trainer arguments (`--trainer-arg KEY=VALUE`): `lake` (URL) and `day` (YYYY-MM-DD) name the feature
partition `<lake>/features/dt=D/` (its `train/` examples and its spec); any field of
`jobs.fm_model.FMHyperParameters` (`factors`, `l2`, `learning_rate`, `batch_size`, `epochs`, `seed`)
overrides its default. The hyper-parameters and vocabulary sizes join the training summary (and so the
MLflow run's params).
"""

from __future__ import annotations

from datetime import date

from jobs.common import lake_path
from jobs.feature_spec import FEATURE_COLUMNS, LABEL, TRAIN, FeatureSpec, feature_table_path, read_feature_spec
from jobs.fm_model import FMHyperParameters
from tfspark import TFSparkTrainer, TrainContext


def squared_error(labels, predictions):
    """Per-example squared error (the runtime averages it over the global batch)."""
    from keras import ops

    return ops.square(ops.cast(labels, predictions.dtype) - predictions)


def fused_adam(learning_rate: float):
    """Keras' Adam with each update done by TensorFlow's fused, in-place kernel (`ResourceApplyAdam`).

    The same update as `keras.optimizers.Adam` (moments, bias correction, epsilon outside the square root), in
    one pass over a variable instead of about ten element-wise operations with a new tensor each. The FM's L2
    on whole embedding tables makes every gradient dense, so each step updates every row of the user tables:
    with Keras' update a step cost 2.6 ms at 13K users and 22–35 ms at 130K (one process); fused, 1.7 and
    14–17 ms. The step still grows with the users of the day (see the README's Performance section).
    """
    import keras
    import tensorflow as tf

    class FusedAdam(keras.optimizers.Adam):
        def update_step(self, gradient, variable, learning_rate):
            if self.amsgrad:
                return super().update_step(gradient, variable, learning_rate)
            dtype = variable.dtype
            step = tf.cast(self.iterations + 1, dtype)
            index = self._get_variable_index(variable)
            tf.raw_ops.ResourceApplyAdam(
                var=(variable.value if isinstance(variable, keras.Variable) else variable).handle,
                m=self._momentums[index].value.handle, v=self._velocities[index].value.handle,
                beta1_power=tf.pow(tf.cast(self.beta_1, dtype), step),
                beta2_power=tf.pow(tf.cast(self.beta_2, dtype), step), lr=tf.cast(learning_rate, dtype),
                beta1=tf.cast(self.beta_1, dtype), beta2=tf.cast(self.beta_2, dtype),
                epsilon=tf.cast(self.epsilon, dtype), grad=tf.convert_to_tensor(gradient, dtype))

    return FusedAdam(learning_rate)


class FMTrainer(TFSparkTrainer):
    """Fits the factorization machine on the training examples of a day's feature partition."""

    label_column = LABEL

    def __init__(self, **kwargs: str) -> None:
        super().__init__(**kwargs)
        self.lake = lake_path(kwargs.pop("lake"))
        self.day = date.fromisoformat(kwargs.pop("day"))
        self.hparams = FMHyperParameters.from_args(kwargs)
        self.batch_size = self.hparams.batch_size
        self.epochs = self.hparams.epochs
        self.seed = self.hparams.seed
        self.spec: FeatureSpec | None = None

    def pre_train(self, spark):
        """The partition's training examples (model inputs and label); keeps its spec for `train`."""
        self.spec = read_feature_spec(self.lake, self.day)
        return spark.read.parquet(str(feature_table_path(self.lake, self.day, TRAIN))).select(*FEATURE_COLUMNS,
                                                                                               LABEL)

    def train(self, dataset, ctx: TrainContext) -> dict:
        """Fit the FM with the runtime's distributed loop, then save it for evaluation."""
        import keras

        from jobs.fm_model import build_fm_model

        keras.utils.set_random_seed(self.hparams.seed)
        with ctx.strategy.scope():
            model = build_fm_model(self.spec, self.hparams)
            optimizer = fused_adam(self.hparams.learning_rate)
        result = ctx.fit(model, optimizer, squared_error, dataset)
        ctx.save_model(model)
        return {**self.hparams.as_params(), "user_vocab_size": self.spec.user_vocab_size,
                "item_vocab_size": self.spec.item_vocab_size, **result}
