"""The FM trainer run by `tfspark-submit`: Spark reads the day's training examples, TensorFlow fits the FM.

Trainer arguments and hyper-parameters: docs/tfspark.md (the FM trainer).
"""

from __future__ import annotations

from datetime import date

from lakeloop.features import FEATURE_COLUMNS, FEATURES, LABEL, TRAIN, FeatureSpec, read_feature_spec
from lakeloop.fm_model import FMHyperParameters
from lakeloop.lake import Lake
from lakeloop.spark_jobs import read_table, use_lake
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
USER_TABLES = ("user_factors", "user_weight")


EXACT_FLOAT32_INTEGERS = 1 << 24


def summable_gradient(gradient, variable, lazy: bool = False):
    """How a gradient travels to the workers' sum. A sparse gradient (an embedding's looked-up rows) of a variable
    updated lazily travels as this worker's slots of a dense tensor with a row per looked-up row of every worker
    (its values and its row index + 1, the other workers' slots zero), so the sum is every worker's looked-up
    rows (`looked_up_rows`); one that is not travels dense unless its variable is larger than
    `SPARSE_ALL_REDUCE_BYTES`, then sparse.

    The workers sum dense gradients in one packed all-reduce, and sparse ones with an all-gather of their own
    (lengths, rows and values: three collectives each): with two workers a step took 8.6 ms with dense user
    tables of 12K rows and 16.4 ms with sparse ones, but 64 ms dense and 29 ms sparse at 120K rows; the slots
    ride in the packed all-reduce whatever the table's size. A table whose row numbers float32 cannot hold
    exactly, or a batch of unknown size, travels sparse.
    """
    import math

    import tensorflow as tf

    if not isinstance(gradient, tf.IndexedSlices):
        return gradient
    looked_up = gradient.indices.shape[0]
    if lazy and looked_up is not None and variable.shape[0] < EXACT_FLOAT32_INTEGERS:
        replica = tf.distribute.get_replica_context()
        before = replica.replica_id_in_sync_group * looked_up
        after = (replica.num_replicas_in_sync - 1) * looked_up - before
        rows = tf.concat([gradient.values, tf.cast(gradient.indices, gradient.values.dtype)[:, None] + 1], axis=1)
        slots = tf.pad(rows, [[before, after], [0, 0]])
        slots.set_shape([replica.num_replicas_in_sync * looked_up, rows.shape[1]])
        return slots
    size = math.prod(variable.shape) * gradient.values.dtype.size
    return gradient if lazy or size > SPARSE_ALL_REDUCE_BYTES else tf.convert_to_tensor(gradient)


def looked_up_rows(gradient):
    """The sparse gradient of the rows looked up, from a lazily updated variable's summed gradient (sparse, or
    the slots of `summable_gradient`)."""
    import tensorflow as tf

    if isinstance(gradient, tf.IndexedSlices):
        return gradient
    filled = tf.reshape(tf.where(gradient[:, -1] > 0), [-1])
    rows = tf.gather(gradient, filled)
    return tf.IndexedSlices(rows[:, :-1], tf.cast(rows[:, -1], tf.int64) - 1)


def lazy_tables(model, names: tuple[str, ...], row_steps) -> list:
    """Per trainable variable, the `row_steps` (each row's `steps_per_lookup`) if `fused_adam` is to update only the
    rows a step looked up, else None: the embedding tables of the layers named `names`, whose lookups become sparse
    reads.

    The FM's user tables grow with the users of a day, and a dense update rewrites all their rows every step
    (the L2 gradient of a whole table is dense), so the step grew with the day (15–18 ms at 120K users
    against 6 ms at 12K, two workers). A lazy update touches only the step's rows; a dense read of a table
    that sparse updates write is copied whole on every read, so the lookups read rows instead (from the worker's
    own copy of the variable: a mirrored variable has no sparse read of its own). The saved model is unchanged.
    """
    import keras

    layers = [layer for layer in model.layers if layer.name in names]
    missing = sorted(set(names) - {layer.name for layer in layers})
    if missing:
        raise ValueError(f"no layers {missing} in {model.name}")
    for layer in layers:
        if not isinstance(layer, keras.layers.Embedding):
            raise ValueError(f"{layer.name}: only Embedding tables can be updated lazily, got {type(layer).__name__}")
        layer.call = _sparse_lookup(layer)
    paths = {layer.embeddings.path for layer in layers}
    return [row_steps if variable.path in paths else None for variable in model.trainable_variables]


def _sparse_lookup(layer):
    import tensorflow as tf

    def call(inputs):
        table = layer.embeddings.value
        local = getattr(table, "_get_on_device_or_primary", None)
        rows = (local() if local else table).sparse_read(tf.cast(inputs, "int32"))
        return tf.cast(rows, layer.compute_dtype)

    return call


def steps_per_lookup(lookups, steps_per_epoch: int):
    """Per row of a table, the steps per step that looks the row up, from its lookups per epoch: 1 / P(a step
    looks it up), with P = 1 - (1 - 1/steps)^lookups (rows never looked up get `steps_per_epoch`).

    A dense update applies the L2 to every row every step; a lazy one reaches a row only on the steps that look
    it up, so its L2 there counts for the steps in between. Without this, the 1M-event e2e day's users overfit
    (RMSE 0.866 against the dense update's 0.841); a constant larger L2 that fixed it cost MovieLens 100K's
    (0.943 against 0.895): how much a row's L2 weighs against its data depends on how often it is seen.
    """
    import numpy as np

    lookups = np.asarray(lookups, dtype=np.float64)
    chance = 1.0 - np.power(1.0 - 1.0 / steps_per_epoch, lookups)
    return (1.0 / np.maximum(chance, 1.0 / steps_per_epoch)).astype(np.float32)


def fused_adam(learning_rate: float, weight_l2: list[float], lazy_row_steps: list | None = None):
    """Keras' Adam plus the L2 gradient of `weight_l2` (per trainable variable, from `take_weight_l2`), each update
    done by TensorFlow's fused, in-place kernel (`ResourceApplyAdam`), or lazily where `lazy_row_steps` (per
    trainable variable, from `lazy_tables`) holds each row's `steps_per_lookup` instead of None.

    The same update as `keras.optimizers.Adam` on a loss with the L2 penalty (moments, bias correction, epsilon
    outside the square root), in one pass over a variable instead of about ten element-wise operations with a
    new tensor each: a step cost 2.6 ms at 13K users and 22–35 ms at 130K with Keras' update, 1.7 and 14–17 ms
    fused (one process). A lazy variable gets Adam's update on the rows of the step only: rows no example of the
    step looks up keep their weights and moments (as in TensorFlow Addons' LazyAdam), so the step's cost does not
    grow with the table. A looked-up row's L2 is scaled by its steps per lookup, the steps whose L2 a dense update
    would have applied to it meanwhile: the same penalty in expectation (see `steps_per_lookup`).
    """
    import keras
    import tensorflow as tf

    row_steps = [None if steps is None else tf.constant(steps, tf.float32)
                 for steps in lazy_row_steps or [None] * len(weight_l2)]

    class FusedAdam(keras.optimizers.Adam):
        def apply_gradients(self, grads_and_vars):
            """Give each gradient the form in which the workers sum it (`summable_gradient`)."""
            grads_and_vars = list(grads_and_vars)
            if not self.built:
                self.build([variable for _, variable in grads_and_vars])
            return super().apply_gradients([
                (summable_gradient(gradient, variable, row_steps[self._get_variable_index(variable)] is not None),
                 variable)
                for gradient, variable in grads_and_vars])

        def update_step(self, gradient, variable, learning_rate):
            if self.amsgrad:
                raise ValueError("fused_adam does not do AMSGrad")
            dtype = variable.dtype
            value = variable.value if isinstance(variable, keras.Variable) else variable
            index = self._get_variable_index(variable)
            handles = (value.handle, self._momentums[index].value.handle, self._velocities[index].value.handle)
            step = tf.cast(self.iterations + 1, dtype)
            beta_1, beta_2, epsilon = (tf.cast(hyper, dtype) for hyper in (self.beta_1, self.beta_2, self.epsilon))
            learning_rate = tf.cast(learning_rate, dtype)
            if row_steps[index] is not None:
                _lazy_adam(handles, looked_up_rows(gradient), weight_l2[index] * row_steps[index], learning_rate,
                           beta_1, beta_2, epsilon, step)
                return
            gradient = tf.convert_to_tensor(gradient, dtype)
            if weight_l2[index]:
                gradient += 2.0 * weight_l2[index] * value
            tf.raw_ops.ResourceApplyAdam(
                var=handles[0], m=handles[1], v=handles[2], beta1_power=tf.pow(beta_1, step),
                beta2_power=tf.pow(beta_2, step), lr=learning_rate, beta1=beta_1, beta2=beta_2, epsilon=epsilon,
                grad=gradient)

    return FusedAdam(learning_rate)


def _lazy_adam(handles, gradient, row_l2, learning_rate, beta_1, beta_2, epsilon, step) -> None:
    """Adam's update of the rows of a sparse gradient (duplicate rows summed) on the variable, moment and velocity
    `handles`, with each row's L2 factor `row_l2`."""
    import tensorflow as tf

    dtype = learning_rate.dtype
    rows, positions = tf.unique(gradient.indices)
    values = tf.math.unsorted_segment_sum(gradient.values, positions, tf.shape(rows)[0])
    weights, momentum, velocity = (tf.raw_ops.ResourceGather(resource=handle, indices=rows, dtype=dtype)
                                   for handle in handles)
    values += 2.0 * tf.gather(tf.cast(row_l2, dtype), rows)[:, None] * weights
    momentum = beta_1 * momentum + (1 - beta_1) * values
    velocity = beta_2 * velocity + (1 - beta_2) * tf.square(values)
    alpha = learning_rate * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))
    weights -= alpha * momentum / (tf.sqrt(velocity) + epsilon)
    for handle, update in zip(handles, (weights, momentum, velocity), strict=True):
        tf.raw_ops.ResourceScatterUpdate(resource=handle, indices=rows, updates=update)


def lookups_per_row(examples, column: str, rows: int):
    """How many of the examples (a Spark DataFrame) look up each row of a table indexed by `column`."""
    import numpy as np

    counts = examples.groupBy(column).count().toArrow()
    lookups = np.zeros(rows, dtype=np.int64)
    lookups[counts.column(column).to_numpy()] = counts.column("count").to_numpy()
    return lookups


class FMTrainer(TFSparkTrainer):
    """Fits the factorization machine on the training examples of a day's feature partition."""

    label_column = LABEL
    # A checkpoint holds every table with its two Adam moments (49 MB at 123K users): saved every 200 steps
    # (tfspark's default), 11% of a 10M-event day's training worker's samples (py-spy) were in the save.
    checkpoint_every = 2000

    def __init__(self, **kwargs: str) -> None:
        super().__init__(**kwargs)
        self.lake_url = kwargs.pop("lake")
        self.day = date.fromisoformat(kwargs.pop("day"))
        self.hparams = FMHyperParameters.from_args(kwargs)
        self.batch_size = self.hparams.batch_size
        self.epochs = self.hparams.epochs
        self.seed = self.hparams.seed
        self.spec: FeatureSpec | None = None
        self.user_lookups = None

    def pre_train(self, spark):
        """The partition's training examples (model inputs and label): a plain scan of the files its manifest
        names, which tfspark's direct Parquet path reads; keeps the partition's spec for `train`."""
        lake = Lake.from_url(self.lake_url)
        use_lake(spark, lake)
        self.spec = read_feature_spec(lake, self.day)
        examples = read_table(spark, lake, FEATURES, self.day, TRAIN).select(*FEATURE_COLUMNS, LABEL)
        if self.hparams.user_update == "lazy":
            self.user_lookups = lookups_per_row(examples, "user_idx", self.spec.user_vocab_size)
        return examples

    def train(self, dataset, ctx: TrainContext) -> dict:
        """Fit the FM with the runtime's distributed loop, then save it for evaluation."""
        import keras

        from lakeloop.fm_model import build_fm_model

        keras.utils.set_random_seed(self.hparams.seed)
        with ctx.strategy.scope():
            model = build_fm_model(self.spec, self.hparams)
            lazy_row_steps = None
            if self.hparams.user_update == "lazy":
                user_steps = steps_per_lookup(self.user_lookups, ctx.steps_per_epoch)
                lazy_row_steps = lazy_tables(model, USER_TABLES, user_steps)
            optimizer = fused_adam(self.hparams.learning_rate, take_weight_l2(model), lazy_row_steps)
        result = ctx.fit(model, optimizer, squared_error, dataset)
        ctx.save_model(model)
        return {**self.hparams.as_params(), "user_vocab_size": self.spec.user_vocab_size,
                "item_vocab_size": self.spec.item_vocab_size, **result}
