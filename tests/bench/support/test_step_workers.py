"""The training-step benchmarks' random inputs have the FM's columns and shapes (the two-worker runs themselves are
the benchmarks)."""

from __future__ import annotations

import numpy as np

from bench.support.step_workers import ITEMS, random_examples
from lakeloop.features import FEATURE_COLUMNS, GENRES


def test_random_examples_are_fm_inputs_over_the_users_asked_for():
    features, labels = random_examples(np.random.default_rng(0), users=50, rows=128)
    assert set(features) == set(FEATURE_COLUMNS)
    assert features["genres"].shape == (128, len(GENRES))
    assert features["user_idx"].max() < 50 and features["item_idx"].max() < ITEMS
    assert labels.shape == (128,) and set(np.unique(labels)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
