"""The factorization machine (Rendle, 2010) over the feature fields of `lakeloop.features`, and its ranking
view (the score before the rating clip).

See docs/tfspark.md (the FM trainer and model).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lakeloop.features import GENRES, INDEX_COLUMNS, YEAR_BUCKETS, FeatureSpec

if TYPE_CHECKING:
    import keras

    from lakeloop.item_autoencoder import AutoencoderTables


USER_UPDATES = ("lazy", "dense")
WARM_STARTS = ("champion", "none")
LEARNING_RATE_DECAYS = ("none", "cosine", "tail")
REFERENCE_BATCH = 256
MAX_AUTO_BATCH = 8192
STEPS_PER_EPOCH_TARGET = 400
RATING, RANKING_SCORE, NEGATIVE_ITEMS = "rating", "ranking_score", "negative_items"
SELECTION_USER_FACTORS, SELECTION_ITEM_FACTORS = "user_selection_factors", "item_selection_factors"
SELECTION_ITEM_WEIGHT = "item_selection_weight"
SELECTION_LAYERS = (SELECTION_USER_FACTORS, SELECTION_ITEM_FACTORS, SELECTION_ITEM_WEIGHT)
FM_NAME = "factorization_machine"
AUTOENCODER_ITEM_CODES, AUTOENCODER_USER_DECODER = "autoencoder_item_codes", "autoencoder_user_decoder"


@dataclass(frozen=True)
class FMHyperParameters:
    """The FM's hyper-parameters and training schedule, logged with every run (docs/tfspark.md, the FM trainer).

    `l2` is per example: each example's loss carries the L2 of the rows it looks up. `batch_size` 0 picks one by the
    day's size (`for_rows`): few steps an epoch cost accuracy on a small day, small batches cost speed on a large
    one. `learning_rate` is Adam's rate at a batch of `REFERENCE_BATCH` examples, scaled by the square root of
    `batch_size` over it and reached after `warmup_steps` of linear warm-up; `learning_rate_decay` "none" keeps it
    there, "cosine" lowers it along a half cosine to 0 at the run's last step, "tail" (the default) keeps it until
    the run's last fifth and lowers it linearly to 0 there (better RMSE at 100K and 1M events; cosine from the start
    cost a 100K day 0.011 of RMSE). The rating model's first-order
    weights take `first_order_l2_scale` × `l2` (a bias may want a shrinkage other than a factor's). `negatives`
    items sampled per example train the selection model (BPR, weight `selection_weight`), whose factor tables take
    the per-example L2 `selection_l2` (BPR's factors fit with far less shrinkage than the rating's: at `l2` they
    learn little beyond popularity); the ranking score is `rating_weight` × the rating score + the selection score.
    `warm_start` "champion" starts from the newest promoted model of an earlier day and trains `warm_epochs` epochs,
    its rating model's factors times `warm_factor_scale` (a cold start's small factors regularise beyond the L2; the
    champion's whole cost RMSE); "none" (or no such model) trains `epochs` from scratch.
    `user_update`: "lazy" updates only the rows of the users a step looks up, so a step costs the same whatever the
    day's users; "dense" applies Adam to every row of the user tables every step. `step_budget` (0: none)
    caps a run's optimizer steps: `epochs` and `warm_epochs` are cut to the fewest epochs reaching it (`for_rows`),
    which only days past the auto batch's cap reach (a 10M-event day's epoch is 1,099 steps of 8,192: 5 epochs from
    scratch, not 11, for +0.002 RMSE and the same NDCG@10; docs/performance.md).
    `autoencoder_weight` > 0 (off by default) fits an item autoencoder of `autoencoder_units` units (L2
    `autoencoder_l2`, `autoencoder_epochs`; `lakeloop.item_autoencoder`) after the FM and blends it into the rating
    with that weight (`build_rating_blend`). At 0.59, chosen on validation, MovieLens 100K's random split went from
    0.8924 to 0.8766, but its time split from 1.0196 to 1.0254, a tie with the bias baseline: predicting a user's
    later ratings, which is what the daily run does, it did not help (docs/performance.md, Model quality). A day
    whose users × items pass `autoencoder_max_cells` trains the FM alone (the autoencoder is dense).
    """

    factors: int = 32
    l2: float = 0.05
    learning_rate: float = 0.002
    batch_size: int = 0
    epochs: int = 11
    warmup_steps: int = 100
    seed: int = 42
    history_pseudo_count: float = 10.0
    user_update: str = "lazy"
    negatives: int = 4
    selection_weight: float = 1.0
    selection_l2: float = 0.0025
    rating_weight: float = 0.3
    warm_start: str = "champion"
    warm_epochs: int = 3
    warm_factor_scale: float = 0.2
    learning_rate_decay: str = "tail"
    first_order_l2_scale: float = 1.0
    step_budget: int = 5000
    autoencoder_weight: float = 0.0
    autoencoder_units: int = 500
    autoencoder_l2: float = 200.0
    autoencoder_epochs: int = 120
    autoencoder_max_cells: int = 5_000_000

    def __post_init__(self) -> None:
        if self.user_update not in USER_UPDATES:
            raise ValueError(f"user_update must be one of {USER_UPDATES}, got {self.user_update!r}")
        if self.warm_start not in WARM_STARTS:
            raise ValueError(f"warm_start must be one of {WARM_STARTS}, got {self.warm_start!r}")
        if self.learning_rate_decay not in LEARNING_RATE_DECAYS:
            raise ValueError(f"learning_rate_decay must be one of {LEARNING_RATE_DECAYS}, "
                             f"got {self.learning_rate_decay!r}")
        if self.warm_factor_scale <= 0:
            raise ValueError(f"warm_factor_scale must be positive (zero factors never learn), "
                             f"got {self.warm_factor_scale}")
        if self.selection_l2 < 0:
            raise ValueError(f"selection_l2 must be 0 or more, got {self.selection_l2}")
        if self.first_order_l2_scale < 0:
            raise ValueError(f"first_order_l2_scale must be 0 or more, got {self.first_order_l2_scale}")
        if self.batch_size < 0:
            raise ValueError(f"batch_size must be 0 (auto) or positive, got {self.batch_size}")
        if self.step_budget < 0:
            raise ValueError(f"step_budget must be 0 (none) or positive, got {self.step_budget}")
        if self.negatives < 1:
            raise ValueError(f"negatives must be at least 1, got {self.negatives}")
        if not 0 <= self.autoencoder_weight <= 1:
            raise ValueError(f"autoencoder_weight must be between 0 and 1, got {self.autoencoder_weight}")
        if self.autoencoder_units < 1 or self.autoencoder_epochs < 1:
            raise ValueError(f"autoencoder_units and autoencoder_epochs must be positive, got "
                             f"{self.autoencoder_units} and {self.autoencoder_epochs}")

    def fits_autoencoder(self, spec: FeatureSpec) -> bool:
        """Whether a day of `spec`'s vocabularies blends the autoencoder into its rating (`autoencoder_weight` > 0 and
        users × items within `autoencoder_max_cells`)."""
        cells = spec.user_vocab_size * spec.item_vocab_size
        return self.autoencoder_weight > 0 and cells <= self.autoencoder_max_cells

    def for_rows(self, rows: int) -> FMHyperParameters:
        """These hyper-parameters resolved for `rows` training examples: `batch_size` 0 (auto) as the largest power
        of two giving at least `STEPS_PER_EPOCH_TARGET` steps an epoch, from `REFERENCE_BATCH` to `MAX_AUTO_BATCH`;
        `epochs` and `warm_epochs` cut to `step_budget`'s steps (rounded up to a whole epoch)."""
        batch = self.batch_size
        if not batch:
            batch = REFERENCE_BATCH
            while batch * 2 <= min(MAX_AUTO_BATCH, rows // STEPS_PER_EPOCH_TARGET):
                batch *= 2
        budget_epochs = math.ceil(self.step_budget / max(math.ceil(rows / batch), 1)) if self.step_budget else 0

        def within_budget(epochs: int) -> int:
            return min(epochs, max(budget_epochs, 1)) if budget_epochs else epochs

        return dataclasses.replace(self, batch_size=batch, epochs=within_budget(self.epochs),
                                   warm_epochs=within_budget(self.warm_epochs))

    @property
    def peak_learning_rate(self) -> float:
        """Adam's rate after the warm-up: `learning_rate` scaled by √(batch_size / REFERENCE_BATCH)."""
        return self.learning_rate * (self.batch_size / REFERENCE_BATCH) ** 0.5

    @classmethod
    def from_args(cls, args: dict[str, str]) -> FMHyperParameters:
        """Override the defaults from string arguments (trainer args); unknown names are an error."""
        types = {option.name: type(option.default) for option in dataclasses.fields(cls)}
        unknown = sorted(set(args) - set(types))
        if unknown:
            raise ValueError(f"unknown FM hyper-parameters {unknown}; known: {sorted(types)}")
        return cls(**{name: types[name](value) for name, value in args.items()})

    def as_params(self) -> dict[str, int | float | str]:
        """The hyper-parameters as a flat dict (training summary, MLflow params)."""
        return dataclasses.asdict(self)


def build_fm_model(spec: FeatureSpec, hparams: FMHyperParameters) -> keras.Model:
    """A Keras FM taking the spec's input columns; outputs `rating` (the FM's score clipped to the rating range) and
    `ranking_score` (`rating_weight` × the FM's score + the selection model's: what top-k lists are ordered by)."""
    import keras
    from keras import layers, ops

    # Per example: each example's loss carries the L2 of the factor rows and weights it looks up (Keras divides an
    # activity regularizer by the batch), so a row is penalised in proportion to its data, as in libFM and SVD.
    per_example = keras.regularizers.L2(hparams.l2)
    first_order_l2 = hparams.l2 * hparams.first_order_l2_scale
    inputs = {name: keras.Input((), dtype="int64", name=name) for name in INDEX_COLUMNS}
    inputs["genres"] = keras.Input((len(GENRES),), dtype="float32", name="genres")
    inputs.update({name: keras.Input((), dtype="float32", name=name) for name in spec.history_columns})
    factors, first_order = [], []

    def dense_field(name: str, values, with_bias: bool = False) -> None:
        factors.append(layers.Dense(hparams.factors, use_bias=False, activity_regularizer=per_example,
                                    kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                                    name=f"{name}_factors")(values))
        # The kernel's L2 per step: a per-example penalty on this output would shrink the global bias it carries.
        weight = layers.Dense(1, kernel_initializer="zeros", kernel_regularizer=keras.regularizers.L2(first_order_l2),
                              use_bias=with_bias, bias_initializer=keras.initializers.Constant(spec.prior_mean),
                              name=f"{name}_weight")
        first_order.append(ops.squeeze(weight(values), -1))

    sizes = {"user_idx": spec.user_vocab_size, "item_idx": spec.item_vocab_size, "year_idx": YEAR_BUCKETS}
    for name, size in sizes.items():
        field = name.removesuffix("_idx")
        factors.append(layers.Embedding(size, hparams.factors, activity_regularizer=per_example,
                                        embeddings_initializer=keras.initializers.RandomNormal(stddev=0.01),
                                        name=f"{field}_factors")(inputs[name]))
        first_order.append(ops.squeeze(layers.Embedding(size, 1, embeddings_initializer="zeros",
                                                        activity_regularizer=keras.regularizers.L2(first_order_l2),
                                                        name=f"{field}_weight")(inputs[name]), -1))
    genres = inputs["genres"]
    # The genre field's first-order layer carries the global bias (a Dense bias needs no custom layer).
    dense_field("genre", genres / ops.maximum(ops.sum(genres, axis=-1, keepdims=True), 1.0), with_bias=True)
    for entity in ("user", "item"):
        mean, count = f"{entity}_mean_rating", f"{entity}_rating_count"
        if mean in inputs:
            confidence = inputs[count] / (inputs[count] + hparams.history_pseudo_count)
            dense_field(f"{entity}_history", ops.expand_dims((inputs[mean] - spec.prior_mean) * confidence, -1))
    stacked = ops.stack(factors, axis=1)
    interactions = 0.5 * ops.sum(ops.square(ops.sum(stacked, axis=1)) - ops.sum(ops.square(stacked), axis=1), axis=-1)
    score = ops.add(sum(first_order), interactions)
    selection = selection_layers(spec, hparams)
    ranking = hparams.rating_weight * score + selection_score(selection, inputs["user_idx"], inputs["item_idx"])
    rating = ops.clip(score, spec.rating_min, spec.rating_max)
    return keras.Model(inputs, {RATING: rating, RANKING_SCORE: ranking}, name=FM_NAME)


def build_rating_blend(fm: keras.Model, spec: FeatureSpec, tables: AutoencoderTables, weight: float) -> keras.Model:
    """The FM with its rating blended with an item autoencoder's (`lakeloop.item_autoencoder`): `weight` × the
    autoencoder's rating (clipped to the rating range) + the rest × the FM's, where the autoencoder knows both the
    user and the item, else the FM's alone. The ranking score stays the FM's. The autoencoder's tables are weights
    of the model, not trained by it."""
    import keras
    from keras import layers, ops

    inputs = {tensor.name: keras.Input(tensor.shape[1:], dtype=tensor.dtype, name=tensor.name) for tensor in fm.inputs}
    outputs = fm(inputs)

    def fixed_lookup(values, name: str, column: str):
        """`values`' rows for the input `column`, from a table the model holds but does not train."""
        table = layers.Embedding(*values.shape, embeddings_initializer="zeros", trainable=False, name=name)
        looked_up = table(inputs[column])
        table.set_weights([values])
        return looked_up

    codes = fixed_lookup(tables.item_codes, AUTOENCODER_ITEM_CODES, "item_idx")
    decoder = fixed_lookup(tables.user_decoder, AUTOENCODER_USER_DECODER, "user_idx")
    autoencoder = ops.clip(ops.sum(codes[:, :-1] * decoder[:, :-1], axis=-1), spec.rating_min, spec.rating_max)
    mix = weight * codes[:, -1] * decoder[:, -1]
    rating = outputs[RATING] + mix * (autoencoder - outputs[RATING])
    return keras.Model(inputs, {RATING: rating, RANKING_SCORE: outputs[RANKING_SCORE]}, name=f"{FM_NAME}_blend")


def factorization_machine(model: keras.Model) -> keras.Model:
    """The FM of a model `build_fm_model` built: the model itself, or the FM inside a rating blend."""
    return model.get_layer(FM_NAME) if FM_NAME in {layer.name for layer in model.layers} else model


def selection_layers(spec: FeatureSpec, hparams: FMHyperParameters) -> dict:
    """The selection model's tables: a user's and an item's factors (per-example L2 `selection_l2`) and an item's
    weight (`l2`), by layer name."""
    import keras

    def table(name: str, rows: int, width: int, stddev: float, l2: float):
        initializer = keras.initializers.RandomNormal(stddev=stddev) if stddev else "zeros"
        return keras.layers.Embedding(rows, width, embeddings_initializer=initializer,
                                      activity_regularizer=keras.regularizers.L2(l2) if l2 else None, name=name)

    factors, factors_l2 = hparams.factors, hparams.selection_l2
    return {SELECTION_USER_FACTORS: table(SELECTION_USER_FACTORS, spec.user_vocab_size, factors, 0.01, factors_l2),
            SELECTION_ITEM_FACTORS: table(SELECTION_ITEM_FACTORS, spec.item_vocab_size, factors, 0.01, factors_l2),
            SELECTION_ITEM_WEIGHT: table(SELECTION_ITEM_WEIGHT, spec.item_vocab_size, 1, 0.0, hparams.l2)}


def selection_score(selection: dict, users, items):
    """How likely the users are to pick the items, as a logit up to a per-user constant: b'_i + <p'_u, q'_i>.
    `items` may have one more axis than `users` (several items per user)."""
    from keras import ops

    user_factors = selection[SELECTION_USER_FACTORS](users)
    if len(items.shape) > len(users.shape):
        user_factors = ops.expand_dims(user_factors, 1)
    return (ops.sum(user_factors * selection[SELECTION_ITEM_FACTORS](items), axis=-1)
            + ops.squeeze(selection[SELECTION_ITEM_WEIGHT](items), -1))


def training_model(model: keras.Model, negatives: int) -> keras.Model:
    """The FM for training: the inputs plus `negative_items` (int64, one row of `negatives` sampled item indices per
    example), the output one (batch, 2 + negatives) tensor: the rating, the selection score of the example's item
    and those of the negatives, which `fm_loss` turns into the example's loss."""
    import keras
    from keras import ops

    selection = {name: model.get_layer(name) for name in SELECTION_LAYERS}
    inputs = {tensor.name: keras.Input(tensor.shape[1:], dtype=tensor.dtype, name=tensor.name)
              for tensor in model.inputs}
    inputs[NEGATIVE_ITEMS] = keras.Input((negatives,), dtype="int64", name=NEGATIVE_ITEMS)
    rating = model({name: tensor for name, tensor in inputs.items() if name != NEGATIVE_ITEMS})[RATING]
    positive = selection_score(selection, inputs["user_idx"], inputs["item_idx"])
    negative = selection_score(selection, inputs["user_idx"], inputs[NEGATIVE_ITEMS])
    stacked = ops.concatenate([ops.stack([rating, positive], axis=1), negative], axis=1)
    return keras.Model(inputs, stacked, name="factorization_machine_training")


def fm_loss(selection_weight: float):
    """The per-example training loss of `training_model`'s output: the rating's squared error plus
    `selection_weight` × the BPR loss of the example's item against each negative (mean of softplus(s⁻ - s⁺))."""
    from keras import ops

    def loss(labels, outputs):
        rating, positive, negative = outputs[:, 0], outputs[:, 1:2], outputs[:, 2:]
        squared = ops.square(ops.cast(labels, rating.dtype) - rating)
        return squared + selection_weight * ops.mean(ops.softplus(negative - positive), axis=-1)

    return loss


def ranking_model(model: keras.Model) -> keras.Model:
    """The model's ranking score alone (what top-k lists are ordered by).

    The rating's clip gives every candidate rated above the top rating the same score, so a list ordered by the
    rating would be ordered by the tie-break (43% of the top-10 rows of a 20k-event run were tied at 5.0); and a
    rating says how much a user who picks an item likes it, not whether they would pick it: the ranking score adds
    the selection model. A model saved before the ranking output (one rating output, a clip) ranks by its score
    before the clip.
    """
    import keras

    if isinstance(model.output, dict):
        return keras.Model(model.inputs, model.output[RANKING_SCORE], name=f"{model.name}_ranking")
    final = model.outputs[0]._keras_history.operation
    if type(final).__name__ != "Clip":
        return model
    return keras.Model(model.inputs, final.input, name=f"{model.name}_ranking")


def rating_model(model: keras.Model) -> keras.Model:
    """The model's predicted rating alone (what RMSE is measured on)."""
    import keras

    if isinstance(model.output, dict):
        return keras.Model(model.inputs, model.output[RATING], name=f"{model.name}_rating")
    return model
