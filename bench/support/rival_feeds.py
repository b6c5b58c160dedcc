"""The feeds the tfspark feed is compared with, each from the same Parquet feature table to batches of TensorFlow
tensors: (a) TFoS-style rows through a queue, (b) `toPandas`, (c) petastorm (whether it installs), (e) pyarrow alone
(the limit) and (e') its common `.batch` idiom. See docs/performance.md.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from bench.harness import Measurement
from bench.support.synthetic_features import (
    FEATURE_DTYPES,
    FEATURE_SCHEMA,
    GENRE_WIDTH,
    Columns,
    read_parquet_numpy,
)
from lakeloop.features import FEATURE_COLUMNS, LABEL

if TYPE_CHECKING:
    import tensorflow as tf
    from pyspark.sql import DataFrame

BATCH_SIZE = 1024
PETASTORM_IMPORT_NOTE = (
    "petastorm 0.13.1 also imports pyarrow.filesystem, which pyarrow removed in 16.0 (this stack: "
    f"pyarrow {pa.__version__})"
)


def batched_dataset(features: Columns, label: np.ndarray, batch_size: int = BATCH_SIZE) -> tf.data.Dataset:
    """Full batches of in-memory columns as a `tf.data.Dataset`: slices of pre-cut batches (fastest here)."""
    import tensorflow as tf

    batches = len(label) // batch_size
    used = batches * batch_size

    def cut(values: np.ndarray) -> np.ndarray:
        return values[:used].reshape(batches, batch_size, *values.shape[1:])

    dataset = tf.data.Dataset.from_tensor_slices(({name: cut(values) for name, values in features.items()},
                                                  cut(label)))
    return dataset.prefetch(tf.data.AUTOTUNE)


def count_rows(dataset: tf.data.Dataset) -> int:
    """Iterate `dataset` to the end (each batch a tensor in this process); return the rows seen."""
    rows = 0
    for _, label in dataset:
        rows += int(label.shape[0])
    return rows


def measure_pyarrow_limit(path: Path) -> Measurement:
    """(e): pyarrow reads the Parquet into numpy, `from_tensor_slices` batches it; no Spark."""
    started = time.monotonic()
    features, label = read_parquet_numpy(path)
    rows = count_rows(batched_dataset(features, label))
    return Measurement("(e) pyarrow → numpy → tf.data (limit)", rows, time.monotonic() - started)


def measure_common_idiom(path: Path) -> Measurement:
    """(e'): as (e), with the common idiom `from_tensor_slices(rows).batch(1024)` (slices row by row)."""
    import tensorflow as tf

    started = time.monotonic()
    features, label = read_parquet_numpy(path)
    dataset = tf.data.Dataset.from_tensor_slices((features, label)).batch(BATCH_SIZE, drop_remainder=True)
    rows = count_rows(dataset.prefetch(tf.data.AUTOTUNE))
    return Measurement("(e') as (e), .batch(1024) idiom", rows, time.monotonic() - started, "reference")


def measure_to_pandas(frame: DataFrame) -> Measurement:
    """(b): `toPandas()` with Arrow enabled, numpy columns (genre arrays stacked), then the batched dataset."""
    arrow_setting = "spark.sql.execution.arrow.pyspark.enabled"
    conf = frame.sparkSession.conf
    previous = conf.get(arrow_setting)
    conf.set(arrow_setting, "true")
    try:
        started = time.monotonic()
        pandas = frame.toPandas()
    finally:
        conf.set(arrow_setting, previous)
    features = {name: pandas[name].to_numpy(FEATURE_DTYPES[name]) for name in FEATURE_COLUMNS if name != "genres"}
    features["genres"] = np.stack(pandas["genres"].to_numpy()).astype(np.float32, copy=False)
    label = pandas[LABEL].to_numpy(np.float32)
    del pandas
    rows = count_rows(batched_dataset(features, label))
    return Measurement("(b) toPandas + from_tensor_slices", rows, time.monotonic() - started)


def rows_to_columns(rows: list[tuple]) -> tuple[Columns, np.ndarray]:
    """What a TFoS TensorFlow process does with a batch of rows (in `FEATURE_SCHEMA` order): numpy columns."""
    columns = {name: np.array(values, dtype=FEATURE_DTYPES[name])
               for name, values in zip(FEATURE_SCHEMA.names, zip(*rows, strict=True), strict=True)}
    return columns, columns.pop(LABEL)


def tfos_consumer(rows: multiprocessing.Queue, reports: multiprocessing.Queue, batch_size: int, rounds: int) -> None:
    """The TensorFlow process of (a): get rows one by one, cut batches, iterate them as `tf.data` tensors.

    Reports `"ready"` once TensorFlow is imported, then, for each of `rounds` rounds, `(rows, monotonic
    time)` after that round's end-of-data marker (None) has been read and every batch iterated.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    def batches():
        pending = []
        while (row := rows.get()) is not None:
            pending.append(row)
            if len(pending) == batch_size:
                yield rows_to_columns(pending)
                pending = []
        if pending:
            yield rows_to_columns(pending)

    def spec(name: str) -> tf.TensorSpec:
        return tf.TensorSpec((None, GENRE_WIDTH) if name == "genres" else (None,), tf.as_dtype(FEATURE_DTYPES[name]))

    signature = ({name: spec(name) for name in FEATURE_COLUMNS}, spec(LABEL))
    dataset = tf.data.Dataset.from_generator(batches, output_signature=signature).prefetch(tf.data.AUTOTUNE)
    reports.put("ready")
    for _ in range(rounds):
        delivered = count_rows(dataset)
        reports.put((delivered, time.monotonic()))


class TFoSStyleFeed:
    """(a): a TensorFlow process fed row by row through a `multiprocessing.Queue`, as TFoS InputMode.SPARK.

    The process is started (and imports TensorFlow) before timing starts, like TFoS's long-lived nodes,
    and serves `rounds` calls of `measure`.
    """

    def __init__(self, rounds: int = 1, batch_size: int = BATCH_SIZE, queue_size: int = 10 * BATCH_SIZE) -> None:
        context = multiprocessing.get_context("spawn")
        self.rows = context.Queue(queue_size)
        self.reports = context.Queue()
        self.process = context.Process(target=tfos_consumer, args=(self.rows, self.reports, batch_size, rounds),
                                       name="tfos-style-consumer", daemon=True)
        self.process.start()
        self.ready = False

    def _report(self) -> Any:
        while True:
            try:
                return self.reports.get(timeout=1)
            except queue.Empty:
                if not self.process.is_alive():
                    raise RuntimeError(f"the TFoS-style consumer died (exit code {self.process.exitcode})") from None

    def measure(self, frame: DataFrame) -> Measurement:
        """Feed every row of `frame` and return the rate seen by the TensorFlow process."""
        if not self.ready:
            if self._report() != "ready":
                raise RuntimeError("the TFoS-style consumer did not start")
            self.ready = True
        started = time.monotonic()
        for row in frame.rdd.toLocalIterator(prefetchPartitions=True):
            self.rows.put(tuple(row))
        self.rows.put(None)
        delivered, finished = self._report()
        return Measurement("(a) TFoS-style rows via mp.Queue", delivered, finished - started)

    def close(self) -> None:
        """Stop the consumer process if it is still running."""
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=10)


def parse_dry_run(output: str) -> tuple[dict[str, str], dict[str, str]]:
    """`uv pip install --dry-run` output → ({package: version removed}, {package: version added})."""
    removed, added = {}, {}
    for sign, name, version in re.findall(r"^\s*([+-])\s+([A-Za-z0-9_.\-]+)==(\S+)", output, re.MULTILINE):
        (added if sign == "+" else removed)[name.lower()] = version
    return removed, added


def petastorm_verdict(removed: dict[str, str], added: dict[str, str]) -> str:
    """What a dry run's changes mean for (c): a package of the stack replaced means it does not install."""
    replaced = [f"{name} {version} → {added.get(name, 'removed')}" for name, version in sorted(removed.items())]
    known_issue = f"; {PETASTORM_IMPORT_NOTE}" if added.get("petastorm") == "0.13.1" else ""
    if replaced:
        return (f"does not install with this stack: it would replace {', '.join(replaced)} (pinned in "
                f"requirements.lock){known_issue}")
    if "petastorm" in added:
        return f"would install without changing the stack, but is not installed here{known_issue}"
    return "petastorm not found by the installer"


def check_petastorm(quick: bool) -> str:
    """(c): petastorm is not in the lock, so ask uv (dry run, never installing) whether it would fit."""
    try:
        import petastorm  # noqa: F401
    except ImportError as error:
        if not isinstance(error, ModuleNotFoundError) or error.name != "petastorm":
            return f"installed but does not import: {error}"
    else:
        return "installed; not measured by this script"
    if quick:
        return "not checked (--quick); a full run asks `uv pip install --dry-run petastorm`"
    uv = Path(sys.executable).parent / "uv"
    try:
        done = subprocess.run([str(uv), "pip", "install", "--dry-run", "--python", sys.executable, "petastorm"],
                              capture_output=True, text=True, timeout=180)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"could not check ({error})"
    if done.returncode:
        reason = (done.stderr.strip().splitlines() or [f"uv exited with {done.returncode}"])[-1]
        return f"does not install with this stack: {reason}"
    return petastorm_verdict(*parse_dry_run(done.stdout + done.stderr))


# ---------------------------------------------------------------------------------------------------------
# (d) and training: a trainer run by the real runtime


def warm_up_tensorflow() -> None:
    """Import TensorFlow and run one tiny `tf.data` pipeline, so no measurement pays for either."""
    features = {"user_idx": np.zeros(2 * BATCH_SIZE, np.int64)}
    count_rows(batched_dataset(features, np.zeros(2 * BATCH_SIZE, np.float32)))
