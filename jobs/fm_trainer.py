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
            optimizer = keras.optimizers.Adam(self.hparams.learning_rate)
        result = ctx.fit(model, optimizer, squared_error, dataset)
        ctx.save_model(model)
        return {**self.hparams.as_params(), "user_vocab_size": self.spec.user_vocab_size,
                "item_vocab_size": self.spec.item_vocab_size, **result}
