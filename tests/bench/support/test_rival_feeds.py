"""The rival feeds' pieces that need no Spark: the petastorm installer check and the TFoS-style row batching."""

from __future__ import annotations

import numpy as np

from bench.support import rival_feeds
from bench.support.synthetic_features import GENRE_WIDTH

UV_DRY_RUN = """Resolved 18 packages in 444ms
Would download 5 packages
Would uninstall 1 package
Would install 5 packages
 + diskcache==5.6.3
 + future==1.0.0
 + petastorm==0.13.1
 + pyzmq==27.3.0
 - setuptools==84.2.1
 + setuptools==69.5.1
"""


def test_a_dry_run_that_replaces_a_pinned_package_means_petastorm_does_not_install():
    removed, added = rival_feeds.parse_dry_run(UV_DRY_RUN)
    assert removed == {"setuptools": "84.2.1"}
    assert added["petastorm"] == "0.13.1"
    verdict = rival_feeds.petastorm_verdict(removed, added)
    assert verdict.startswith("does not install with this stack")
    assert "setuptools 84.2.1 → 69.5.1" in verdict
    assert "pyarrow.filesystem" in verdict
    assert rival_feeds.petastorm_verdict({}, {"petastorm": "0.14.0"}) == (
        "would install without changing the stack, but is not installed here")


def test_tfos_style_rows_become_numpy_columns():
    rows = [(1, 2, 3, [0.0] * 18 + [1.0], 3.5, 10.0, 4.0, 7.0, 4.0),
            (5, 6, 7, [1.0] + [0.0] * 18, 2.0, 1.0, 3.0, 2.0, 2.5)]
    features, label = rival_feeds.rows_to_columns(rows)
    assert features["genres"].shape == (2, GENRE_WIDTH)
    assert features["user_idx"].tolist() == [1, 5] and features["user_idx"].dtype == np.int64
    assert features["item_rating_count"].tolist() == [7.0, 2.0] and features["item_rating_count"].dtype == np.float32
    assert label.tolist() == [4.0, 2.5]
