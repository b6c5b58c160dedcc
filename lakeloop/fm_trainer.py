"""The FM trainer run by `tfspark-submit`: Spark reads the day's training examples, TensorFlow fits the FM.

Trainer arguments and hyper-parameters: docs/tfspark.md (the FM trainer).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from typing import Any

from lakeloop.features import (
    FEATURE_COLUMNS,
    LABEL,
    TRAIN,
    DayFeatures,
    FeatureSpec,
)
from lakeloop.fm_model import SELECTION_ITEM_WEIGHT, FMHyperParameters
from lakeloop.lake import Lake
from lakeloop.spark_jobs import read_feature_table, use_lake
from lakeloop.warm_start import WarmStart
from tfspark import TFSparkTrainer, TrainContext

log = logging.getLogger(__name__)


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
USER_TABLES = ("user_factors", "user_weight", "user_selection_factors")
TAIL_DECAY_FRACTION = 0.2  # learning_rate_decay "tail": the share of the run whose rate falls linearly to 0


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


def lazy_tables(model, names: tuple[str, ...]) -> set[str]:
    """The paths of the variables `fused_adam` is to update only at the rows a step looked up: the embedding tables
    of the layers named `names`, whose lookups become sparse reads.

    The FM's user tables grow with the users of a day, and a dense update rewrites all their rows every step, so
    the step grew with the day (15–18 ms at 120K users against 6 ms at 12K, two workers). A lazy update touches only
    the step's rows; a dense read of a table that sparse updates write is copied whole on every read, so the lookups
    read rows instead (from the worker's own copy of the variable: a mirrored variable has no sparse read of its
    own). The saved model is unchanged.
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
    return {layer.embeddings.path for layer in layers}


def _sparse_lookup(layer):
    import tensorflow as tf

    def call(inputs):
        table = layer.embeddings.value
        local = getattr(table, "_get_on_device_or_primary", None)
        rows = (local() if local else table).sparse_read(tf.cast(inputs, "int32"))
        return tf.cast(rows, layer.compute_dtype)

    return call


def fused_adam(learning_rate, weight_l2: list[float], lazy: list[bool] | None = None):
    """Keras' Adam plus the L2 gradient of `weight_l2` (per trainable variable, from `take_weight_l2`), each update
    done by TensorFlow's fused, in-place kernel (`ResourceApplyAdam`), or lazily where `lazy` (per trainable
    variable, from `lazy_tables`) is true. `learning_rate` is a rate or a Keras schedule.

    The same update as `keras.optimizers.Adam` on a loss with the L2 penalty (moments, bias correction, epsilon
    outside the square root), in one pass over a variable instead of about ten element-wise operations with a
    new tensor each: a step cost 2.6 ms at 13K users and 22–35 ms at 130K with Keras' update, 1.7 and 14–17 ms
    fused (one process). A lazy variable gets Adam's update on the rows of the step only: rows no example of the
    step looks up keep their weights and moments (as in TensorFlow Addons' LazyAdam), so the step's cost does not
    grow with the table. Its L2 comes with the data loss (the model's per-example penalty), so it is sparse too.
    """
    import keras
    import tensorflow as tf

    lazy = list(lazy or [False] * len(weight_l2))
    if any(weight_l2[index] for index, is_lazy in enumerate(lazy) if is_lazy):
        raise ValueError("a lazily updated table takes its L2 per example (activity regularizer), not as weight L2")

    class FusedAdam(keras.optimizers.Adam):
        def apply_gradients(self, grads_and_vars):
            """Give each gradient the form in which the workers sum it (`summable_gradient`)."""
            grads_and_vars = list(grads_and_vars)
            if not self.built:
                self.build([variable for _, variable in grads_and_vars])
            return super().apply_gradients([
                (summable_gradient(gradient, variable, lazy[self._get_variable_index(variable)]), variable)
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
            if lazy[index]:
                _lazy_adam(handles, looked_up_rows(gradient), learning_rate, beta_1, beta_2, epsilon, step)
                return
            gradient = tf.convert_to_tensor(gradient, dtype)
            if weight_l2[index]:
                gradient += 2.0 * weight_l2[index] * value
            tf.raw_ops.ResourceApplyAdam(
                var=handles[0], m=handles[1], v=handles[2], beta1_power=tf.pow(beta_1, step),
                beta2_power=tf.pow(beta_2, step), lr=learning_rate, beta1=beta_1, beta2=beta_2, epsilon=epsilon,
                grad=gradient)

    return FusedAdam(learning_rate)


def _lazy_adam(handles, gradient, learning_rate, beta_1, beta_2, epsilon, step) -> None:
    """Adam's update of the rows of a sparse gradient (duplicate rows summed) on the variable, moment and velocity
    `handles`."""
    import tensorflow as tf

    dtype = learning_rate.dtype
    rows, positions = tf.unique(gradient.indices)
    values = tf.math.unsorted_segment_sum(gradient.values, positions, tf.shape(rows)[0])
    weights, momentum, velocity = (tf.raw_ops.ResourceGather(resource=handle, indices=rows, dtype=dtype)
                                   for handle in handles)
    momentum = beta_1 * momentum + (1 - beta_1) * values
    velocity = beta_2 * velocity + (1 - beta_2) * tf.square(values)
    alpha = learning_rate * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))
    weights -= alpha * momentum / (tf.sqrt(velocity) + epsilon)
    for handle, update in zip(handles, (weights, momentum, velocity), strict=True):
        tf.raw_ops.ResourceScatterUpdate(resource=handle, indices=rows, updates=update)


@dataclass
class TrainingRecipe:
    """What one FM training run is made of: the model saved for serving, the model trained (with negatives), the
    optimizer and the per-example loss."""

    model: Any
    trained: Any
    optimizer: Any
    loss: Any


def training_recipe(spec: FeatureSpec, hparams: FMHyperParameters, total_steps: int = 0) -> TrainingRecipe:
    """Build the FM, its training view, the optimizer (fused Adam with the warm-up schedule, decaying over the run's
    `total_steps` if asked, lazy user tables if asked) and the loss; call it inside the strategy's scope."""
    import keras

    from lakeloop.fm_model import build_fm_model, fm_loss, training_model

    if hparams.batch_size <= 0:
        raise ValueError(
            "the batch size is still automatic: resolve it for the day's rows (FMHyperParameters.for_rows)")
    if hparams.learning_rate_decay != "none" and total_steps <= 0:
        raise ValueError(f"learning_rate_decay {hparams.learning_rate_decay!r} needs the run's total steps: pass "
                         "total_steps (TrainContext.total_steps) to training_recipe")
    keras.utils.set_random_seed(hparams.seed)
    model = build_fm_model(spec, hparams)
    lazy_paths = lazy_tables(model, USER_TABLES) if hparams.user_update == "lazy" else set()
    trained = training_model(model, hparams.negatives)
    variables = trained.trainable_variables
    schedule = warmup_schedule(hparams.peak_learning_rate, hparams.warmup_steps, hparams.learning_rate_decay,
                               total_steps)
    optimizer = fused_adam(schedule,
                           take_weight_l2(trained), [variable.path in lazy_paths for variable in variables])
    return TrainingRecipe(model, trained, optimizer, fm_loss(hparams.selection_weight))


def warmup_schedule(peak: float, warmup_steps: int, decay: str = "none", total_steps: int = 0):
    """A Keras learning-rate schedule rising linearly to `peak` over `warmup_steps`, then constant, or with `decay`
    "cosine" falling along a half cosine to 0 at step `total_steps` - 1, or with "tail" falling linearly to 0 over
    the last `TAIL_DECAY_FRACTION` of the steps: large batches take a large rate, which the first steps from random
    weights cannot; a rate that falls late in the run lets the weights settle."""
    import math

    import keras
    from keras import ops

    decay_steps = max(total_steps - warmup_steps, 1)
    tail_steps = max(total_steps * TAIL_DECAY_FRACTION, 1.0)

    class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            done = ops.cast(step, "float32") + 1.0
            rate = peak * ops.minimum(1.0, done / max(warmup_steps, 1))
            if decay == "cosine":
                progress = ops.clip((done - warmup_steps) / decay_steps, 0.0, 1.0)
                rate = rate * 0.5 * (1.0 + ops.cos(math.pi * progress))
            elif decay == "tail":
                rate = rate * ops.clip((total_steps - done + 1.0) / tail_steps, 0.0, 1.0)
            return rate

        def get_config(self) -> dict:
            return {"peak": peak, "warmup_steps": warmup_steps, "decay": decay, "total_steps": total_steps}

    return LinearWarmup()


def with_negatives(dataset, negatives: int, item_vocab_size: int):
    """The dataset with `negative_items` added to each batch's features: `negatives` item indices per example, drawn
    uniformly from the item vocabulary (the out-of-vocabulary index 0 excluded)."""
    import tensorflow as tf

    from lakeloop.fm_model import NEGATIVE_ITEMS

    top = max(item_vocab_size, 2)

    def add(features, labels):
        sampled = tf.random.uniform([tf.shape(labels)[0], negatives], 1, top, dtype=tf.int64)
        return {**features, NEGATIVE_ITEMS: sampled}, labels

    return dataset.map(add)


def rows_per_index(examples, column: str, size: int):
    """How many of the examples (a Spark DataFrame) have each value 0..size-1 of the index `column`."""
    import numpy as np

    counts = examples.groupBy(column).count().toArrow()
    rows = np.zeros(size, dtype=np.int64)
    rows[counts.column(column).to_numpy()] = counts.column("count").to_numpy()
    return rows


def popularity_prior(item_counts):
    """The selection model's starting item weights: each item's log(1 + training ratings), centred, a column.

    What users pick is mostly what is popular; BPR learns that into the item weights, but a small day has too few
    steps to (its lists lost to popularity at 5,000 events, NDCG@10 0.033 against 0.061), so training starts there
    and learns the rest. A warm start starts there too: popularity moves from day to day, and the model it starts
    from holds an earlier day's (and nothing for new items).
    """
    import numpy as np

    prior = np.log1p(np.asarray(item_counts, np.float64))
    return (prior - prior[1:].mean() if len(prior) > 1 else prior).astype(np.float32)[:, None]


class FMTrainer(TFSparkTrainer):
    """Fits the factorization machine on the training examples of a day's feature partition, from the newest promoted
    model of an earlier day when there is one (`lakeloop.warm_start`)."""

    label_column = LABEL
    # A checkpoint holds every table with its two Adam moments (49 MB at 123K users): saved every 200 steps
    # (tfspark's default), 11% of a 10M-event day's training worker's samples (py-spy) were in the save.
    checkpoint_every = 2000

    def __init__(self, **kwargs: str) -> None:
        super().__init__(**kwargs)
        self.lake_url = kwargs.pop("lake")
        self.day = date.fromisoformat(kwargs.pop("day"))
        self.model_name = kwargs.pop("model_name", None)
        self.hparams = FMHyperParameters.from_args(kwargs)
        self.epochs = self.hparams.epochs
        self.seed = self.hparams.seed
        self.spec: FeatureSpec | None = None
        self.warm_start: WarmStart | None = None
        self.item_counts = None
        self.features_versions: dict[str, int] = {}

    def pre_train(self, spark):
        """The day's training examples (model inputs and label): a plain scan of the files the train table's Delta
        log names, which tfspark's direct Parquet path reads; keeps the features' spec and table versions for
        `train`, and the model to start from (asking the registry: one that cannot answer fails the run)."""
        lake = Lake.from_url(self.lake_url)
        use_lake(spark, lake)
        features = DayFeatures.of(lake, self.day)
        self.spec = features.spec
        self.features_versions = features.versions
        asked = self.hparams
        self.hparams = asked.for_rows(features.summary["train_rows"])
        self.batch_size, self.epochs = self.hparams.batch_size, self.hparams.epochs
        if (self.hparams.epochs, self.hparams.warm_epochs) != (asked.epochs, asked.warm_epochs):
            log.info("%d training rows at batch %d: epochs %d and warm_epochs %d cut to %d and %d by step_budget %d",
                     features.summary["train_rows"], self.batch_size, asked.epochs, asked.warm_epochs,
                     self.hparams.epochs, self.hparams.warm_epochs, self.hparams.step_budget)
        if self.hparams.warm_start == "champion":
            self.warm_start = self.starting_model(lake)
        examples = read_feature_table(spark, features, TRAIN).select(*FEATURE_COLUMNS, LABEL)
        if self.warm_start is not None:
            self.epochs = self.hparams.warm_epochs
        self.item_counts = rows_per_index(examples, "item_idx", self.spec.item_vocab_size)
        return examples

    def starting_model(self, lake: Lake) -> WarmStart | None:
        """The model a warm start carries: the newest version of `model_name` promoted before the day (None: a cold
        start, as without a model name). A benchmark replaying days without a registry picks its own."""
        return WarmStart.find(lake, self.model_name, self.day) if self.model_name else None

    def train(self, dataset, ctx: TrainContext) -> dict:
        """Fit the FM with the runtime's distributed loop, blend the day's item autoencoder into its rating (on the
        chief, when the day is small enough: `FMHyperParameters.fits_autoencoder`), then save it for evaluation."""
        with ctx.strategy.scope():
            recipe = training_recipe(self.spec, self.hparams, ctx.total_steps)
            carried = (self.warm_start.apply(recipe.model, self.spec, self.hparams.warm_factor_scale)
                       if self.warm_start is not None else {})
            recipe.model.get_layer(SELECTION_ITEM_WEIGHT).embeddings.assign(popularity_prior(self.item_counts))
        examples = with_negatives(dataset, self.hparams.negatives, self.spec.item_vocab_size)
        result = ctx.fit(recipe.trained, recipe.optimizer, recipe.loss, examples)
        model, autoencoder = recipe.model, None
        if not self.hparams.fits_autoencoder(self.spec):
            if self.hparams.autoencoder_weight > 0:
                log.info("%d users x %d items pass autoencoder_max_cells %d: the FM's rating alone",
                         self.spec.user_vocab_size, self.spec.item_vocab_size, self.hparams.autoencoder_max_cells)
        elif ctx.is_chief:
            model, autoencoder = self.blend_autoencoder(recipe.model)
        ctx.save_model(model)
        return {**self.hparams.as_params(), "autoencoder": autoencoder, "user_vocab_size": self.spec.user_vocab_size,
                "item_vocab_size": self.spec.item_vocab_size, "epochs_trained": self.epochs,
                "features_versions": self.features_versions,
                "warm_start": self.warm_start.describe(carried) if self.warm_start else None, **result}

    def blend_autoencoder(self, trained) -> tuple[Any, dict]:
        """A copy of the trained FM with the day's item autoencoder (fitted on the train table's ratings, all of
        them whichever worker runs it) blended into its rating, and what the fit took."""
        from lakeloop.fm_model import build_fm_model, build_rating_blend
        from lakeloop.item_autoencoder import fit_item_autoencoder

        ratings = DayFeatures.of(Lake.from_url(self.lake_url), self.day).read(
            TRAIN, columns=["user_idx", "item_idx", LABEL])
        hparams = self.hparams
        tables = fit_item_autoencoder(ratings["user_idx"].to_numpy(), ratings["item_idx"].to_numpy(),
                                      ratings[LABEL].to_numpy(), self.spec.user_vocab_size,
                                      self.spec.item_vocab_size, hparams.autoencoder_units, hparams.autoencoder_l2,
                                      hparams.autoencoder_epochs, hparams.seed)
        fm = build_fm_model(self.spec, hparams)
        fm.set_weights(trained.get_weights())
        blend = build_rating_blend(fm, self.spec, tables, hparams.autoencoder_weight)
        return blend, {"ratings": ratings.num_rows, "seconds": round(tables.seconds, 1),
                       "train_rmse": round(tables.train_rmse, 4), "weight": hparams.autoencoder_weight}
