"""The FM trainer run by `tfspark-submit`: Spark reads the feature window, TensorFlow fits the FM.

Trainer arguments (`--trainer-arg KEY=VALUE`): `lake` (URL), `day` (YYYY-MM-DD), `window_days`
(default 30: train on the train split of the days [day-window+1, day]), `epochs`, `factors`,
`learning_rate`, `batch_size`.
"""

from __future__ import annotations

from datetime import date

from jobs.common import lake_path, read_partitions
from jobs.features import FEATURE_COLUMNS, FEATURES
from lakeloop.lake import window_days
from tfspark import TFSparkTrainer, TrainContext


def squared_error(labels, predictions):
    """Per-example squared error (the runtime averages it over the global batch)."""
    from keras import ops

    return ops.square(ops.cast(labels, predictions.dtype) - predictions)


class FMTrainer(TFSparkTrainer):
    """Fits the factorization machine on a window of daily feature partitions."""

    label_column = "label"

    def __init__(self, **kwargs: str) -> None:
        super().__init__(**kwargs)
        self.lake = lake_path(kwargs["lake"])
        self.day = date.fromisoformat(kwargs["day"])
        self.window_days = int(kwargs.get("window_days", 30))
        self.epochs = int(kwargs.get("epochs", 5))
        self.batch_size = int(kwargs.get("batch_size", 1024))
        self.factors = int(kwargs.get("factors", 16))
        self.learning_rate = float(kwargs.get("learning_rate", 0.01))

    def pre_train(self, spark):
        """The train split of the feature partitions in the window."""
        features = read_partitions(spark, self.lake, FEATURES, window_days(self.day, self.window_days))
        return features.filter(features.split == "train").select(*FEATURE_COLUMNS, self.label_column)

    def train(self, dataset, ctx: TrainContext) -> dict:
        """Fit the FM with the runtime's distributed loop, then save it for evaluation."""
        import keras

        from jobs.fm_model import build_fm_model

        with ctx.strategy.scope():
            model = build_fm_model(factors=self.factors)
            optimizer = keras.optimizers.Adam(self.learning_rate)
        result = ctx.fit(model, optimizer, squared_error, dataset)
        ctx.save_model(model)
        return {"factors": self.factors, "learning_rate": self.learning_rate, "window_days": self.window_days,
                **result}
