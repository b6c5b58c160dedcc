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
