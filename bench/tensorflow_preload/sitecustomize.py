"""Imports TensorFlow at interpreter start when `LAKELOOP_BENCH_PRELOAD_TENSORFLOW=1`.

`bench.harness.start_spark` puts this directory on the `PYTHONPATH` of its Spark sessions and, with
`preload_tensorflow`, sets the variable for their Python workers, so PySpark's worker daemon imports TensorFlow once
and every worker forked from it starts with TensorFlow loaded: the feed benchmark then compares the feeds without a
fresh worker's import.
"""

import os

if os.environ.get("LAKELOOP_BENCH_PRELOAD_TENSORFLOW") == "1":
    import tensorflow  # noqa: F401
