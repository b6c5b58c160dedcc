"""A lake with one day's real feature partition, built by the ETL and features jobs, for the evaluation and
registry tests (session-wide: each test writes its models under its own name)."""

from __future__ import annotations

from datetime import date

import pyarrow.parquet as pq
import pytest

from lakeloop.ingest import RATINGS_SCHEMA
from lakeloop.lake import partition_path
from lakeloop.movielens import MovieLens
from lakeloop.replay import build_events, write_catalog

FEATURE_DAY = date(2026, 11, 20)


@pytest.fixture(scope="session")
def feature_lake(spark, movielens, tmp_path_factory):
    """The first 2,000 MovieLens ratings as one day's raw partition, curated and turned into features."""
    from jobs import etl, features

    lake = tmp_path_factory.mktemp("feature-lake")
    write_catalog(movielens, lake)
    events = build_events(MovieLens(movielens.ratings.slice(0, 2000), movielens.movies), 1, FEATURE_DAY)
    raw = partition_path(lake, etl.RAW, FEATURE_DAY)
    raw.mkdir(parents=True)
    pq.write_table(events.cast(RATINGS_SCHEMA.output_schema), raw / "part-0.parquet")
    etl.run(spark, lake, FEATURE_DAY)
    features.run(spark, lake, FEATURE_DAY, features.FeatureOptions(window_days=1))
    return lake


@pytest.fixture(scope="session")
def untrained_model():
    """Builds an FM from the day's spec with seeded random weights (a stand-in for `train_model`'s output)."""
    import keras

    from jobs.feature_spec import read_feature_spec
    from jobs.fm_model import FMHyperParameters, build_fm_model

    def build(lake, seed: int):
        keras.utils.set_random_seed(seed)
        return build_fm_model(read_feature_spec(lake, FEATURE_DAY), FMHyperParameters(factors=4))

    return build


@pytest.fixture(scope="session")
def fitted_model(untrained_model):
    """Fits an FM in-process (Keras `fit`) on the day's training *and evaluation* examples: a model that beats
    the baselines on the evaluation set by construction, better the more epochs it gets, so the tests can
    choose whether the quality gate promotes it."""
    import keras
    import pyarrow as pa

    from lakeloop.evaluation import model_inputs, read_features

    def fit(lake, epochs: int, seed: int = 1):
        model = untrained_model(lake, seed)
        examples = pa.concat_tables([read_features(lake, FEATURE_DAY, split) for split in ("train", "eval")])
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
        model.fit(model_inputs(examples), examples["label"].to_numpy(), batch_size=64, epochs=epochs, verbose=0)
        return model

    return fit
