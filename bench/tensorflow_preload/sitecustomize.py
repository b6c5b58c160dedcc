"""Imports TensorFlow at interpreter start when `LAKELOOP_BENCH_PRELOAD_TENSORFLOW=1`.

`bench/feed_benchmark.py` puts this directory on the `PYTHONPATH` of its Spark sessions and sets the variable
for the Python workers of the session that compares the feeds, so PySpark's worker daemon imports TensorFlow
once and every worker forked from it starts with TensorFlow loaded, as the processes of the other
alternatives do: the feeds are then compared without a fresh worker's import.
"""

import os

if os.environ.get("LAKELOOP_BENCH_PRELOAD_TENSORFLOW") == "1":
    import tensorflow  # noqa: F401
