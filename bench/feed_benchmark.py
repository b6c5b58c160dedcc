"""Feeding a Spark DataFrame to TensorFlow: this runtime's Arrow feed against the alternatives, side by side.

One Parquet feature table (MovieLens 100K ratings re-sampled with replacement to `--rows` rows, mapped to the
FM's inputs `lakeloop.features.FEATURE_COLUMNS` and the `label`) is fed, in one run, on one local[2] Spark
session, into batches of 1024 rows as TensorFlow tensors, five ways:

  (a) TFoS-style     TensorFlowOnSpark's InputMode.SPARK: Spark rows (`df.rdd.toLocalIterator()`) pickled one
                     by one through a `multiprocessing.Queue` into a TensorFlow process that batches them.
  (b) toPandas       `df.toPandas()` (Arrow enabled) + `tf.data.Dataset.from_tensor_slices`.
  (c) petastorm      `make_spark_converter`, if petastorm installs with this stack (checked with uv, dry run).
  (d) tfspark        this runtime, the real thing: `tfspark.runtime.run_trainer` → barrier task → `tfspark.feed`
                     cache → `tf.data`, timed from the end of `pre_train` on the driver to the last tensor of
                     the first pass in the task, on both of its paths:
      (d1)           the direct Parquet path, which the FM trainer takes: the driver plans the row groups, the
                     barrier task reads them with pyarrow into the cache in a background thread while the
                     first pass turns them into batches (driver plan, Spark job, read ∥ batches);
      (d2)           the Spark path (`spark.tfspark.parquetDirect=false`): a shuffle to one worker, Spark's
                     row → Arrow conversion, `mapInArrow` into the task, cache, batches;
                     and the passes after the first, from the cache, the same on both.
  (e) pyarrow limit  `pyarrow.parquet.read_table` → numpy → `from_tensor_slices` of pre-cut batches, no Spark.

(a) is built to be generous to TFoS: a plain `multiprocessing.Queue` instead of TFoS's manager proxy (one
network round trip per row), rows leave the JVM straight to the feeding process (no Python worker hop), and
the TensorFlow side cuts 1024-row batches into numpy columns before `tf.data` (no per-row `from_generator`).
(b) and (e) share the fastest `tf.data` idiom found here (slicing pre-cut batches); the common idiom
`from_tensor_slices(rows).batch(1024)` is printed as (e') for reference.

Then the FM (`lakeloop.fm_model.build_fm_model`, Adam, squared error) is trained for the same steps inside the
same barrier task with the runtime's loop (`ctx.fit`), once fed by the feed (d1) and once by in-memory numpy
arrays, and examples/s are compared. Last, the peak RSS of each worker with the spill cache is read from the
training summary (`peak_rss_bytes`) for each of `--rss-rows`.

Every alternative runs in a process that has imported TensorFlow already: the Spark session's Python workers
fork from a daemon that imported it (`bench/tensorflow_preload`), and the report gives, apart, what a fresh
worker's import costs (a real job pays it once per worker; on the direct path the read overlaps it).

The alternatives run in `--repeat` interleaved rounds and the best round of each is kept (the spread is
printed): on a machine shared with other work, whatever runs while it is busy is slowed down.

    .venv/bin/python bench/feed_benchmark.py                       # 1M rows, 3 rounds; RSS at 1M and 5M rows
    .venv/bin/python bench/feed_benchmark.py --rows 2000000 --rss-rows 1000000 --repeat 2
    .venv/bin/python bench/feed_benchmark.py --quick               # a smoke run: 5,000 rows, one round
    .venv/bin/python bench/feed_benchmark.py --scaling-rows 5000000,10000000   # also (d1) vs (e) at 5M, 10M

The feature tables are generated once into `--data-dir` (default: the system temp dir) and reused.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import queue
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lakeloop.features import FEATURE_COLUMNS, GENRES, HISTORY_COLUMNS, INDEX_COLUMNS, LABEL, YEAR_BUCKETS, FeatureSpec
from lakeloop.fm_model import FMHyperParameters
from tfspark.feed import DEFAULT_CACHE_MEMORY_BYTES
from tfspark.parquet_direct import PARQUET_DIRECT, PARQUET_DIRECT_CONF, SPARK_ARROW
from tfspark.trainer import TFSparkTrainer, TrainContext

if TYPE_CHECKING:
    import tensorflow as tf
    from pyspark.sql import DataFrame, SparkSession

    from lakeloop.movielens import MovieLens

if __name__ != "__main__":
    # Imported (by the tests) rather than run: ship the trainer to the Spark workers by value, since the
    # workers cannot import this file by name.
    from pyspark import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])

BATCH_SIZE = 1024
GENRE_WIDTH = len(GENRES)
FEATURE_SCHEMA = pa.schema([
    *[(name, pa.int64()) for name in INDEX_COLUMNS],
    ("genres", pa.list_(pa.float32())),
    *[(name, pa.float32()) for name in HISTORY_COLUMNS],
    (LABEL, pa.float32()),
])
FEATURE_DTYPES = {field.name: np.int64 if pa.types.is_int64(field.type) else np.float32 for field in FEATURE_SCHEMA}
GENERATE_CHUNK_ROWS = 1_000_000
ROW_GROUP_ROWS = 1 << 17
RSS_CACHE_MEMORY_MB = 32
PETASTORM_IMPORT_NOTE = (
    "petastorm 0.13.1 also imports pyarrow.filesystem, which pyarrow removed in 16.0 (this stack: "
    f"pyarrow {pa.__version__})"
)
TARGETS = {"feed_vs_tfos": 10.0, "feed_vs_limit": 0.5, "train_vs_numpy": 0.9}
RATIO_NAMES = {
    "feed_vs_tfos": "feed (d1) first pass, the FM pipeline's path / (a) TFoS-style",
    "feed_vs_limit": "feed (d1) first pass, the FM pipeline's path / (e) pyarrow limit",
    "train_vs_numpy": "FM training (d) / in-memory numpy",
    "spark_arrow_vs_tfos": "for information, no target: feed (d2) Spark → Arrow first pass / (a) TFoS-style",
    "spark_arrow_vs_limit": "for information, no target: feed (d2) Spark → Arrow first pass / (e) pyarrow limit",
    "cached_vs_limit": "for information, no target: feed (d) cached passes / (e) pyarrow limit",
}

Columns = dict[str, np.ndarray]


# ---------------------------------------------------------------------------------------------------------
# The data set


@dataclass(frozen=True)
class RatingFeatures:
    """MovieLens ratings as FM inputs, one entry per rating; the genre rows are shared through `catalog_row`.

    Indices start at 1 (0 is the out-of-vocabulary bucket, as in `jobs.features`); the history columns are
    each user's and item's mean rating and count over the whole data set (the real table counts only the
    ratings before each one: same shape and types, which is what a feed benchmark needs).
    """

    user_idx: np.ndarray
    item_idx: np.ndarray
    label: np.ndarray
    catalog_row: np.ndarray
    year_idx_by_movie: np.ndarray
    genres_by_movie: np.ndarray
    history: dict[str, np.ndarray]


def history_statistics(index: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each rating's entity's mean rating and rating count (float32), entities numbered by `index`."""
    counts = np.bincount(index).astype(np.float64)
    means = np.bincount(index, weights=label) / np.maximum(counts, 1)
    return means[index].astype(np.float32), counts[index].astype(np.float32)


def year_buckets(years: pa.Array) -> np.ndarray:
    """Five-year buckets from 1920 (bucket 1, as `jobs.features.year_index`); 0 for an unknown year."""
    known = np.asarray(pc.fill_null(years, 1920).to_numpy(zero_copy_only=False), dtype=np.int64)
    buckets = np.clip((known - 1920) // 5, 0, YEAR_BUCKETS - 2) + 1
    return np.where(np.asarray(years.is_null().to_numpy(zero_copy_only=False)), 0, buckets)


def genre_multi_hot(genres: pa.ListArray) -> np.ndarray:
    """A (movies, 19) float32 matrix with 1.0 at each genre of each movie, in `GENRES` order."""
    matrix = np.zeros((len(genres), GENRE_WIDTH), dtype=np.float32)
    flat = genres.flatten()
    position = pc.index_in(flat, value_set=pa.array(GENRES)).to_numpy(zero_copy_only=False)
    parent = pc.list_parent_indices(genres).to_numpy()
    known = ~np.isnan(position.astype(np.float64))
    matrix[parent[known], position[known].astype(np.int64)] = 1.0
    return matrix


def rating_features(movielens: MovieLens) -> RatingFeatures:
    """Map MovieLens 100K to the FM inputs, vectorised: dense id indices, year bucket, genre multi-hot."""
    ratings, movies = movielens.ratings, movielens.movies.combine_chunks()
    _, user_idx = np.unique(ratings["user_id"].to_numpy(), return_inverse=True)
    _, item_idx = np.unique(ratings["item_id"].to_numpy(), return_inverse=True)
    catalog_row = pc.index_in(ratings["item_id"], value_set=movies["item_id"])
    if catalog_row.null_count:
        raise ValueError(f"{catalog_row.null_count} ratings name a movie missing from the catalog")
    label = ratings["rating"].to_numpy().astype(np.float32)
    history = {}
    for entity, index in (("user", user_idx), ("item", item_idx)):
        history[f"{entity}_mean_rating"], history[f"{entity}_rating_count"] = history_statistics(index, label)
    return RatingFeatures(
        user_idx=user_idx.astype(np.int64) + 1,
        item_idx=item_idx.astype(np.int64) + 1,
        label=label,
        catalog_row=catalog_row.to_numpy().astype(np.int64),
        year_idx_by_movie=year_buckets(movies["year"]),
        genres_by_movie=genre_multi_hot(movies["genres"].combine_chunks()),
        history=history,
    )


def sample_table(features: RatingFeatures, rng: np.random.Generator, rows: int) -> pa.Table:
    """`rows` ratings drawn with replacement, as an Arrow table of `FEATURE_SCHEMA`."""
    picks = rng.integers(0, len(features.label), rows)
    movie = features.catalog_row[picks]
    genres = pa.ListArray.from_arrays(
        pa.array(np.arange(0, (rows + 1) * GENRE_WIDTH, GENRE_WIDTH, dtype=np.int32)),
        pa.array(features.genres_by_movie[movie].ravel()),
    )
    columns = {
        "user_idx": features.user_idx[picks],
        "item_idx": features.item_idx[picks],
        "year_idx": features.year_idx_by_movie[movie],
        "genres": genres,
        **{name: values[picks] for name, values in features.history.items()},
        LABEL: features.label[picks],
    }
    return pa.Table.from_arrays([pa.array(columns[name]) for name in FEATURE_SCHEMA.names], schema=FEATURE_SCHEMA)


def ensure_dataset(data_dir: Path, rows: int, seed: int = 0) -> Path:
    """The Parquet feature table of `rows` rows in `data_dir`, generated on the first call and then reused."""
    path = Path(data_dir) / f"fm-features-v2-{rows}-seed{seed}.parquet"
    if path.exists():
        return path
    from lakeloop.config import load_settings
    from lakeloop.movielens import load_movielens

    started = time.monotonic()
    features = rating_features(load_movielens(load_settings().dataset_dir))
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with pq.ParquetWriter(partial, FEATURE_SCHEMA) as writer:
        for start in range(0, rows, GENERATE_CHUNK_ROWS):
            writer.write_table(sample_table(features, rng, min(GENERATE_CHUNK_ROWS, rows - start)),
                               row_group_size=ROW_GROUP_ROWS)
    os.replace(partial, path)
    print(f"generated {rows:,} rows into {path} ({path.stat().st_size / 2**20:.0f} MiB) "
          f"in {time.monotonic() - started:.1f}s", flush=True)
    return path


def dataset_spec(path: Path) -> FeatureSpec:
    """The FM's `FeatureSpec` for a feature table (vocabulary sizes from the largest indices)."""
    table = pq.read_table(path, columns=["user_idx", "item_idx", LABEL])
    label = table[LABEL]
    return FeatureSpec(user_vocab_size=pc.max(table["user_idx"]).as_py() + 1,
                       item_vocab_size=pc.max(table["item_idx"]).as_py() + 1,
                       prior_mean=pc.mean(label).as_py(), rating_min=pc.min(label).as_py(),
                       rating_max=pc.max(label).as_py())


def read_parquet_numpy(path: Path) -> tuple[Columns, np.ndarray]:
    """The feature table as numpy columns with pyarrow alone: ({feature: array}, label)."""
    table = pq.read_table(path)
    features = {name: table[name].to_numpy() for name in FEATURE_COLUMNS if name != "genres"}
    features["genres"] = table["genres"].combine_chunks().flatten().to_numpy().reshape(-1, GENRE_WIDTH)
    return features, table[LABEL].to_numpy()


# ---------------------------------------------------------------------------------------------------------
# Feeding: the alternatives


@dataclass(frozen=True)
class FeedResult:
    """Rows delivered to TensorFlow as tensors, and the seconds it took."""

    name: str
    rows: int
    seconds: float
    note: str = ""

    @property
    def rows_per_second(self) -> float:
        """Delivered rows per second."""
        return self.rows / self.seconds


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


def measure_pyarrow_limit(path: Path) -> FeedResult:
    """(e): pyarrow reads the Parquet into numpy, `from_tensor_slices` batches it; no Spark."""
    started = time.monotonic()
    features, label = read_parquet_numpy(path)
    rows = count_rows(batched_dataset(features, label))
    return FeedResult("(e) pyarrow → numpy → tf.data (limit)", rows, time.monotonic() - started)


def measure_common_idiom(path: Path) -> FeedResult:
    """(e'): as (e), with the common idiom `from_tensor_slices(rows).batch(1024)` (slices row by row)."""
    import tensorflow as tf

    started = time.monotonic()
    features, label = read_parquet_numpy(path)
    dataset = tf.data.Dataset.from_tensor_slices((features, label)).batch(BATCH_SIZE, drop_remainder=True)
    rows = count_rows(dataset.prefetch(tf.data.AUTOTUNE))
    return FeedResult("(e') as (e), .batch(1024) idiom", rows, time.monotonic() - started, "reference")


def measure_to_pandas(frame: DataFrame) -> FeedResult:
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
    return FeedResult("(b) toPandas + from_tensor_slices", rows, time.monotonic() - started)


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

    def measure(self, frame: DataFrame) -> FeedResult:
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
        return FeedResult("(a) TFoS-style rows via mp.Queue", delivered, finished - started)

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


class ArrowFeedProbe(TFSparkTrainer):
    """A trainer that times the runtime's feed, and optionally FM training fed by it vs by numpy.

    `pre_train` reads the Parquet table as `lakeloop.fm_trainer.FMTrainer` reads its training examples (a
    projection of the model's columns) and stamps the time; the object travels to the barrier task and
    stamps the time again when unpickled, which the runtime does after the task has cached its whole
    partition: the difference is the files → cache part of the feed (read by the task itself on the direct
    Parquet path, converted by Spark and shipped through `mapInArrow` on the other). `train` then iterates the
    dataset for `epochs` passes (cache → `tf.data` tensors) and, with `train_fm`, fits the FM for the same
    steps with `ctx.fit` twice: on the Arrow feed and on the same Parquet read into numpy (untimed), in
    the order `numpy_first` says (alternate it between runs: the second fit finds TensorFlow warmer).
    """

    batch_size = BATCH_SIZE
    label_column = LABEL
    checkpoint_every = 1 << 40

    def __init__(self, path: str, epochs: int = 2, train_fm: bool = False, numpy_first: bool = True) -> None:
        super().__init__()
        self.path = path
        self.epochs = epochs
        self.train_fm = train_fm
        self.numpy_first = numpy_first
        self.hparams = FMHyperParameters(batch_size=BATCH_SIZE)
        self.spec: FeatureSpec | None = None
        self.pre_train_done_at: float | None = None
        self.unpickled_at: float | None = None

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.unpickled_at = time.monotonic()

    def pre_train(self, spark: SparkSession) -> DataFrame:
        """The feature table, as the FM trainer reads it from the lake."""
        self.spec = dataset_spec(Path(self.path))
        frame = spark.read.parquet(self.path).select(*FEATURE_COLUMNS, LABEL)
        self.pre_train_done_at = time.monotonic()
        return frame

    def train(self, dataset: tf.data.Dataset, ctx: TrainContext) -> dict[str, Any]:
        """Time the passes over `dataset`; with `train_fm`, time FM training on the feed and on numpy."""
        started = time.monotonic()
        pass_ends, steps, rows = [], 0, 0
        for _, label in dataset:
            steps += 1
            rows += int(label.shape[0])
            if steps % ctx.steps_per_epoch == 0:
                pass_ends.append(time.monotonic())
        marks = [started, *pass_ends]
        result: dict[str, Any] = {
            "start_seconds": self.unpickled_at - self.pre_train_done_at,
            "setup_seconds": started - self.unpickled_at,
            "pass_seconds": [end - start for start, end in zip(marks, marks[1:], strict=False)],
            "pass_rows": rows // max(len(pass_ends), 1),
        }
        if self.train_fm:
            result["training"] = {}
            for source in ("numpy", "arrow") if self.numpy_first else ("arrow", "numpy"):
                if source == "arrow":
                    result["training"]["arrow"] = self._fit(ctx, ctx.feed.dataset(), keep_feed=True)
                else:
                    in_memory = batched_dataset(*read_parquet_numpy(Path(self.path)), ctx.per_worker_batch_size)
                    result["training"]["numpy"] = self._fit(ctx, in_memory.repeat(), keep_feed=False)
        return result

    def _fit(self, ctx: TrainContext, dataset: tf.data.Dataset, keep_feed: bool) -> dict[str, Any]:
        import keras

        from lakeloop.fm_model import build_fm_model
        from lakeloop.fm_trainer import squared_error

        checkpoints = tempfile.mkdtemp(prefix="feed-bench-ckpt-")
        run_ctx = dataclasses.replace(ctx, checkpoint_dir=checkpoints, feed=ctx.feed if keep_feed else None,
                                      fit_result=None)
        try:
            keras.utils.set_random_seed(self.hparams.seed)
            with ctx.strategy.scope():
                model = build_fm_model(self.spec, self.hparams)
                optimizer = keras.optimizers.Adam(self.hparams.learning_rate)
            started = time.monotonic()
            fitted = run_ctx.fit(model, optimizer, squared_error, dataset)
            seconds = time.monotonic() - started
        finally:
            shutil.rmtree(checkpoints, ignore_errors=True)
        return {"seconds": seconds, "examples": fitted["global_step"] * ctx.batch_size, "loss": fitted["loss"]}


def run_probe(spark: SparkSession, trainer: ArrowFeedProbe, workdir: Path, num_workers: int = 1,
              cache_memory_bytes: int | None = None, feed_path: str = PARQUET_DIRECT) -> dict[str, Any]:
    """Run `trainer` through `tfspark.runtime.run_trainer` in this process; return the training summary.

    `feed_path` is the path the run must take: `SPARK_ARROW` turns the direct Parquet path off for this run;
    a run that did not take the path asked for is an error (its figures would be mislabelled).
    """
    from tfspark.runtime import RunConfig, run_trainer

    output = Path(tempfile.mkdtemp(prefix="probe-", dir=workdir))
    config = RunConfig(
        checkpoint_dir=str(output / "checkpoints"),
        output_dir=str(output),
        num_workers=num_workers,
        cache_memory_bytes=cache_memory_bytes or DEFAULT_CACHE_MEMORY_BYTES,
        log_every=1 << 40,
        trainer_name="feed_benchmark.ArrowFeedProbe",
    )
    if feed_path == SPARK_ARROW:
        spark.conf.set(PARQUET_DIRECT_CONF, "false")
    try:
        summary = run_trainer(spark, trainer, config)
    finally:
        spark.conf.unset(PARQUET_DIRECT_CONF)
        shutil.rmtree(output, ignore_errors=True)
    if summary["feed_path"] != feed_path:
        raise RuntimeError(f"the probe took the {summary['feed_path']} path, not {feed_path}: "
                           f"{summary['feed_path_reason']}")
    return summary


FIRST_PASS = {PARQUET_DIRECT: "(d1) tfspark feed, direct Parquet, first pass",
              SPARK_ARROW: "(d2) tfspark feed, Spark → Arrow, first pass"}
CACHED_PASSES = "(d) tfspark feed, cached passes"


def first_pass_result(summary: dict[str, Any]) -> FeedResult:
    """(d1) or (d2), whichever path the run took: from the end of pre_train to the end of the first pass.

    The note splits the time: start (driver plan, Spark job, Python worker, unpickling; on the Spark path
    also filling the cache, as the task measured it), set-up (strategy, feed) and the first pass into
    tensors. On the direct path the cache fills in a background thread during set-up and the first pass.
    """
    name = FIRST_PASS[summary["feed_path"]]
    start, setup = summary["start_seconds"], summary["setup_seconds"]
    first, cache_fill = summary["pass_seconds"][0], summary["cache_fill_seconds"][0]
    if summary["feed_path"] == PARQUET_DIRECT:
        note = (f"start {start:.2f}s + set-up {setup:.2f}s + first pass {first:.2f}s "
                f"(pyarrow → cache in the background: {cache_fill:.2f}s)")
    else:
        note = (f"start {start - cache_fill:.2f}s + Spark → cache {cache_fill:.2f}s + set-up {setup:.2f}s + "
                f"cache → tensors {first:.2f}s")
    return FeedResult(name, summary["pass_rows"], start + setup + first, note)


def cached_passes_result(summary: dict[str, Any]) -> FeedResult:
    """(d)'s passes after the first: cache → tensors (the same on both paths)."""
    passes = summary["pass_seconds"]
    later = passes[1:] or passes
    return FeedResult(CACHED_PASSES, summary["pass_rows"] * len(later), sum(later), "from the cache")


# ---------------------------------------------------------------------------------------------------------
# Reporting


def target_ratios(feeds: list[FeedResult], training: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The target ratios (feed (d1)/(a), (d1)/(e), training (d)/numpy), plus (d2)/(a), (d2)/(e), cached/(e).

    The feed targets are checked on (d1), the direct Parquet path, which `lakeloop.fm_trainer.FMTrainer` takes (its
    `pre_train` is a projection of the feature table's columns).
    """

    def rate(prefix: str) -> float:
        return next(result for result in feeds if result.name.startswith(prefix)).rows_per_second

    direct, spark_arrow, tfos, limit = rate("(d1)"), rate("(d2)"), rate("(a)"), rate("(e)")
    return {
        "feed_vs_tfos": direct / tfos,
        "feed_vs_limit": direct / limit,
        "train_vs_numpy": examples_per_second(training["arrow"]) / examples_per_second(training["numpy"]),
        "spark_arrow_vs_tfos": spark_arrow / tfos,
        "spark_arrow_vs_limit": spark_arrow / limit,
        "cached_vs_limit": rate(CACHED_PASSES) / limit,
    }


def ratio_line(name: str, best: float, rounds: list[float], target: float | None) -> str:
    """One target check: the ratio of the best rounds, each round's own ratio, and whether the target is met.

    Met only if both the best-of ratio and the median round's ratio reach the target; if they disagree the
    machine was too busy to tell.
    """
    per_round = f"; per round {', '.join(f'{value:.2f}×' for value in rounds)}" if len(rounds) > 1 else ""
    if target is None:
        return f"- {name}: {best:.2f}×{per_round}"
    median = statistics.median(rounds) if rounds else best
    if best >= target and median >= target:
        verdict = "met"
    elif best < target and median < target:
        verdict = "NOT met"
    else:
        verdict = "inconclusive (the rounds disagree)"
    best_of = " best of each" if len(rounds) > 1 else ""
    return f"- {name}: {best:.2f}×{best_of}{per_round} (target ≥ {target:g}×) — {verdict}"


def feed_table(results: list[FeedResult], petastorm: str, tfos: FeedResult, limit: FeedResult) -> list[str]:
    """The feed table in markdown, with each row's ratio to (a) and to (e)."""
    lines = [
        "| feed (batches of 1024 → TF tensors) | rows | seconds | rows/s | vs (a) | vs (e) | note |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for result in results:
        lines.append(
            f"| {result.name} | {result.rows:,} | {result.seconds:.2f} | {result.rows_per_second:,.0f} | "
            f"{result.rows_per_second / tfos.rows_per_second:.2f}× | "
            f"{result.rows_per_second / limit.rows_per_second:.2f}× | {result.note} |"
        )
        if result.name.startswith("(b)"):
            lines.append(f"| (c) petastorm make_spark_converter | – | – | – | – | – | {petastorm} |")
    return lines


def training_table(training: dict[str, dict[str, Any]]) -> list[str]:
    """FM training examples/s fed by the Arrow feed vs by in-memory numpy, in markdown."""
    numpy_rate = examples_per_second(training["numpy"])
    lines = ["| FM training (ctx.fit, 1 worker) | examples | seconds | examples/s | vs numpy | final loss | rounds |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for key, name in (("numpy", "in-memory numpy → tf.data"), ("arrow", "tfspark feed (cache; direct Parquet)")):
        run = training[key]
        rate = examples_per_second(run)
        rounds = ", ".join(f"{value:,.0f}" for value in run.get("rounds", [rate]))
        lines.append(f"| {name} | {run['examples']:,} | {run['seconds']:.2f} | {rate:,.0f} | "
                     f"{rate / numpy_rate:.2f}× | {run['loss']:.4f} | {rounds} |")
    return lines


def rss_table(rss_runs: list[tuple[int, int, dict[str, Any]]]) -> list[str]:
    """Peak RSS of each worker at each size and cache limit, in markdown."""
    lines = ["| rows | workers | feed path | rows per worker | cache memory limit | spilled | "
             "peak RSS per worker (MiB) |",
             "|---:|---:|---|---|---:|---|---|"]
    for rows, limit_bytes, summary in rss_runs:
        peaks = ", ".join(f"{peak / 2**20:,.0f}" for peak in summary["peak_rss_bytes"])
        per_worker = ", ".join(f"{count:,}" for count in summary["worker_rows"])
        spilled = ", ".join("yes" if flag else "no" for flag in summary["cache_spilled"])
        limit = f"{limit_bytes / 2**20:g} MiB"
        lines.append(f"| {rows:,} | {summary['workers']} | {summary['feed_path']} | {per_worker} | {limit} | "
                     f"{spilled} | {peaks} |")
    return lines


# ---------------------------------------------------------------------------------------------------------
# The run


@dataclass
class BenchmarkResults:
    """Every figure of one run: the best round of each feed and of each training source."""

    rows: int
    epochs: int
    repeat: int
    feeds: list[FeedResult]
    petastorm: str
    training: dict[str, dict[str, Any]]
    rss_runs: list[tuple[int, int, dict[str, Any]]]
    rss_workers: int
    round_ratios: list[dict[str, float]]
    scaling: list[tuple[int, FeedResult, FeedResult]] = dataclasses.field(default_factory=list)
    tensorflow_import_seconds: float | None = None

    def feed(self, prefix: str) -> FeedResult:
        """The feed result whose name starts with `prefix`, e.g. "(a)"."""
        return next(result for result in self.feeds if result.name.startswith(prefix))

    @property
    def ratios(self) -> dict[str, float]:
        """The target ratios between the best round of each alternative."""
        return target_ratios(self.feeds, self.training)


def examples_per_second(run: dict[str, Any]) -> float:
    """Training examples per second of one `ArrowFeedProbe` fit."""
    return run["examples"] / run["seconds"]


def best_feed(rounds: list[FeedResult]) -> FeedResult:
    """The fastest round, its note saying how many rounds ran and their spread."""
    best = max(rounds, key=lambda result: result.rows_per_second)
    if len(rounds) == 1:
        return best
    rates = [result.rows_per_second for result in rounds]
    spread = f"best of {len(rounds)} ({min(rates):,.0f}–{max(rates):,.0f} rows/s)"
    return dataclasses.replace(best, note=f"{best.note}; {spread}" if best.note else spread)


def best_training(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest fit of one source, with every round's examples/s."""
    best = max(rounds, key=examples_per_second)
    return {**best, "rounds": [examples_per_second(run) for run in rounds]}


def warm_up_tensorflow() -> None:
    """Import TensorFlow and run one tiny `tf.data` pipeline, so no measurement pays for either."""
    features = {"user_idx": np.zeros(2 * BATCH_SIZE, np.int64)}
    count_rows(batched_dataset(features, np.zeros(2 * BATCH_SIZE, np.float32)))


def run_benchmark(spark: SparkSession, data_dir: Path, rows: int, rss_sizes: list[int], *, epochs: int = 2,
                  repeat: int = 1, rss_workers: int = 2, rss_cache_mb: float = RSS_CACHE_MEMORY_MB,
                  quick: bool = False, scaling_sizes: list[int] | None = None) -> BenchmarkResults:
    """Measure every feed and FM training on (d) vs numpy `repeat` times, the RSS runs, then (d1) against (e)
    at each of `scaling_sizes`, on `spark`.

    The rounds interleave the alternatives (a machine shared with other work slows whatever runs while it
    is busy); the best round of each is kept. Progress is printed as it goes.
    """
    path = ensure_dataset(data_dir, rows)
    for size in rss_sizes:
        ensure_dataset(data_dir, size)
    tfos = TFoSStyleFeed(rounds=repeat)
    workdir = Path(tempfile.mkdtemp(prefix="feed-bench-"))
    feeds: dict[str, list[FeedResult]] = {}
    training: dict[str, list[dict[str, Any]]] = {"numpy": [], "arrow": []}
    round_ratios: list[dict[str, float]] = []

    def record(result: FeedResult) -> FeedResult:
        feeds.setdefault(result.name, []).append(result)
        print(f"  {result.name}: {result.rows_per_second:,.0f} rows/s {result.note}", flush=True)
        return result

    try:
        petastorm = check_petastorm(quick)
        print(f"(c) petastorm: {petastorm}", flush=True)
        warm_up_tensorflow()
        frame = spark.read.parquet(str(path))
        for round_index in range(repeat):
            print(f"round {round_index + 1} of {repeat}", flush=True)
            this_round = [record(measure_pyarrow_limit(path)), record(measure_common_idiom(path)),
                          record(measure_to_pandas(frame)), record(tfos.measure(frame))]
            # (d1) trains the FM too; (d2) only needs its first pass. Their order alternates between rounds.
            paths = (PARQUET_DIRECT, SPARK_ARROW) if round_index % 2 == 0 else (SPARK_ARROW, PARQUET_DIRECT)
            for feed_path in paths:
                if feed_path == PARQUET_DIRECT:
                    trainer = ArrowFeedProbe(str(path), epochs=epochs, train_fm=True,
                                             numpy_first=round_index % 2 == 0)
                    probe = run_probe(spark, trainer, workdir)
                    this_round += [record(first_pass_result(probe)), record(cached_passes_result(probe))]
                else:
                    spark_arrow = run_probe(spark, ArrowFeedProbe(str(path), epochs=1), workdir,
                                            feed_path=SPARK_ARROW)
                    this_round.append(record(first_pass_result(spark_arrow)))
            for source, run in probe["training"].items():
                training[source].append(run)
                print(f"  FM training on {source}: {examples_per_second(run):,.0f} examples/s", flush=True)
            round_ratios.append(target_ratios(this_round, probe["training"]))
        rss_runs = measure_rss_runs(spark, data_dir, rss_sizes, rss_workers, rss_cache_mb, quick=quick)
        scaling = [measure_first_pass_scaling(spark, data_dir, size, repeat, workdir) for size in scaling_sizes or []]
        import_seconds = None if quick else tensorflow_import_seconds()
    finally:
        tfos.close()
        shutil.rmtree(workdir, ignore_errors=True)
    order = ("(a)", "(b)", "(d1)", "(d2)", CACHED_PASSES, "(e)", "(e')")
    return BenchmarkResults(
        rows=rows,
        epochs=epochs,
        repeat=repeat,
        feeds=[best_feed(rounds) for prefix in order for name, rounds in feeds.items() if name.startswith(prefix)],
        petastorm=petastorm,
        training={source: best_training(runs) for source, runs in training.items()},
        rss_runs=rss_runs,
        rss_workers=rss_workers,
        round_ratios=round_ratios,
        scaling=scaling,
        tensorflow_import_seconds=import_seconds,
    )


def measure_rss_runs(spark: SparkSession, data_dir: Path, sizes: list[int], workers: int, cache_mb: float, *,
                     quick: bool = False) -> list[tuple[int, int, dict[str, Any]]]:
    """One pass over each size with `workers` workers and a `cache_mb` cache (spilling), plus the largest size
    with the default in-memory cache (not in a quick run): (rows, cache limit bytes, training summary)."""
    memory_only = [] if quick or not sizes else [(max(sizes), DEFAULT_CACHE_MEMORY_BYTES)]
    workdir = Path(tempfile.mkdtemp(prefix="feed-bench-rss-"))
    runs = []
    try:
        for size, limit_bytes in [(size, int(cache_mb * 2**20)) for size in sizes] + memory_only:
            trainer = ArrowFeedProbe(str(ensure_dataset(data_dir, size)), epochs=1)
            summary = run_probe(spark, trainer, workdir, workers, limit_bytes)
            runs.append((size, limit_bytes, summary))
            print(f"peak RSS at {size:,} rows, cache limit {limit_bytes / 2**20:g} MiB: "
                  f"{[round(peak / 2**20) for peak in summary['peak_rss_bytes']]} MiB per worker "
                  f"(spilled: {summary['cache_spilled']}, TensorFlow preloaded: {summary['tensorflow_preloaded']})",
                  flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return runs


def measure_first_pass_scaling(spark: SparkSession, data_dir: Path, rows: int, repeat: int,
                               workdir: Path) -> tuple[int, FeedResult, FeedResult]:
    """(e) and (d1)'s first pass on a `rows`-row table, interleaved `repeat` times; the best of each.

    Spark's task start and TensorFlow's import in a fresh worker are paid once per run, so the ratio
    (d1)/(e) depends on the size; this shows where those fixed costs stop mattering.
    """
    path = ensure_dataset(data_dir, rows)
    limits, direct = [], []
    for round_index in range(repeat):
        limits.append(measure_pyarrow_limit(path))
        direct.append(first_pass_result(run_probe(spark, ArrowFeedProbe(str(path), epochs=1), workdir)))
        print(f"  scaling {rows:,} rows, round {round_index + 1}: (e) {limits[-1].seconds:.2f}s, "
              f"(d1) {direct[-1].seconds:.2f}s ({direct[-1].note})", flush=True)
    return rows, best_feed(limits), best_feed(direct)


def scaling_table(scaling: list[tuple[int, FeedResult, FeedResult]]) -> list[str]:
    """(d1)'s first pass against (e) by table size, in markdown."""
    lines = ["| rows | (e) seconds | (d1) first pass seconds | (d1) / (e) | (d1) split (best round) |",
             "|---:|---:|---:|---:|---|"]
    for rows, limit, direct in scaling:
        lines.append(f"| {rows:,} | {limit.seconds:.2f} | {direct.seconds:.2f} | "
                     f"{direct.rows_per_second / limit.rows_per_second:.2f}× | {direct.note.split('; best')[0]} |")
    return lines


def tensorflow_import_note(seconds: float | None) -> str:
    """What the table leaves out: a fresh worker's TensorFlow import."""
    measured = f"{seconds:.2f}s here" if seconds is not None else "not measured in a --quick run"
    return ("Every alternative runs with TensorFlow already imported: (d)'s Spark workers fork from a daemon that "
            f"imported it. A fresh worker pays the import once per training job ({measured}); on the direct path "
            "its partition is read in the background meanwhile.")


def markdown_report(results: BenchmarkResults) -> str:
    """The tables and the target checks, ready to paste into the README."""
    ratios = results.ratios
    steps = results.training["arrow"]["examples"] // BATCH_SIZE
    rounds = f"best of {results.repeat} rounds" if results.repeat > 1 else "one round"
    lines = [
        f"### Feed: {results.rows:,} rows → batches of {BATCH_SIZE} as TF tensors, one consumer, local[2] "
        f"({os.cpu_count()} cores, {rounds})",
        "",
        *feed_table(results.feeds, results.petastorm, results.feed("(a)"), results.feed("(e)")),
        "",
        tensorflow_import_note(results.tensorflow_import_seconds),
        "",
        f"### FM training: {steps:,} steps ({results.epochs} epochs) of {BATCH_SIZE}, one worker, same task, "
        f"same loop (`ctx.fit`), {rounds}",
        "",
        *training_table(results.training),
        "",
        f"### Peak RSS per worker ({results.rss_workers} workers, one pass over the data; each worker imports "
        "TensorFlow itself, as in a real job)",
        "",
        *rss_table(results.rss_runs),
        "",
        *([f"### Feed (d1) first pass against (e) by size, best of {results.repeat}", "",
           *scaling_table(results.scaling), ""] if results.scaling else []),
        "### Targets",
        "",
        *(ratio_line(name, ratios[key], [round_[key] for round_ in results.round_ratios], TARGETS.get(key))
          for key, name in RATIO_NAMES.items()),
    ]
    return "\n".join(lines)


TENSORFLOW_PRELOAD_DIR = Path(__file__).resolve().parent / "tensorflow_preload"
PRELOAD_VARIABLE = "LAKELOOP_BENCH_PRELOAD_TENSORFLOW"


def start_spark(preload_tensorflow: bool = False) -> SparkSession:
    """A local[2] session; Python workers are not reused, as `tfspark-submit` sets.

    With `preload_tensorflow` its Python workers fork from a daemon that imported TensorFlow
    (`bench/tensorflow_preload`), so (d) runs with TensorFlow loaded, as (a), (b) and (e) do
    (`tensorflow_import_seconds` measures what a fresh worker pays instead, once per training job); without,
    every worker imports it, as in a real job (the RSS runs).
    """
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if str(TENSORFLOW_PRELOAD_DIR) not in os.environ.get("PYTHONPATH", ""):
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TENSORFLOW_PRELOAD_DIR),
                                                                 os.environ.get("PYTHONPATH")]))
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local[2]").appName("lakeloop feed benchmark")
             .config("spark.python.worker.reuse", "false")
             .config("spark.sql.shuffle.partitions", "2")
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.driver.memory", "4g")
             .config(f"spark.executorEnv.{PRELOAD_VARIABLE}", "1" if preload_tensorflow else "0")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    if preload_tensorflow:  # start the daemon of Arrow UDFs' workers, which imports TensorFlow, before any timing
        spark.range(2, numPartitions=2).mapInArrow(lambda batches: batches, "id long").collect()
    return spark


def tensorflow_import_seconds() -> float:
    """Seconds a fresh Python process takes to import TensorFlow (what a Spark worker without it pays)."""
    environment = {key: value for key, value in os.environ.items() if key != PRELOAD_VARIABLE}
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import tensorflow"], env=environment, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def parse_sizes(text: str) -> list[int]:
    """`"1000000,5000000"` → [1000000, 5000000]."""
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def parser() -> argparse.ArgumentParser:
    """The command line."""
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("--rows", type=int, help="rows of the feed/training table (default 1,000,000; --quick 5,000)")
    args.add_argument("--rss-rows", type=parse_sizes, help="sizes of the RSS runs (default 1M,5M; --quick: --rows)")
    args.add_argument("--rss-workers", type=int, default=2, help="workers of the RSS runs")
    args.add_argument("--rss-cache-mb", type=float, default=RSS_CACHE_MEMORY_MB,
                      help="in-memory cache limit per worker in the RSS runs (spills past it)")
    args.add_argument("--scaling-rows", type=parse_sizes, default=[],
                      help="sizes at which (d1)'s first pass is also measured against (e) alone, e.g. 5000000,10000000")
    args.add_argument("--epochs", type=int, default=2, help="feed passes and FM training epochs (at least 2)")
    args.add_argument("--repeat", type=int, help="rounds of the feed and training comparison, best kept "
                                                 "(default 3; --quick 1)")
    args.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "lakeloop-feed-bench",
                      help="where the generated Parquet tables are kept and reused")
    args.add_argument("--quick", action="store_true", help="smoke run: 5,000 rows, one round, no installer check")
    return args


def main(argv: list[str] | None = None) -> BenchmarkResults:
    """Run the benchmark on its own local[2] session and print the markdown report."""
    options = parser().parse_args(argv)
    rows = options.rows or (5_000 if options.quick else 1_000_000)
    rss_sizes = options.rss_rows or ([rows] if options.quick else [1_000_000, 5_000_000])
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    spark = start_spark(preload_tensorflow=True)
    try:
        results = run_benchmark(spark, options.data_dir, rows, [], epochs=max(options.epochs, 2),
                                repeat=options.repeat or (1 if options.quick else 3), quick=options.quick,
                                scaling_sizes=options.scaling_rows)
    finally:
        spark.stop()
    spark = start_spark(preload_tensorflow=False)
    try:
        rss_runs = measure_rss_runs(spark, options.data_dir, rss_sizes, options.rss_workers, options.rss_cache_mb,
                                    quick=options.quick)
    finally:
        spark.stop()
    results = dataclasses.replace(results, rss_runs=rss_runs, rss_workers=options.rss_workers)
    print("\n" + markdown_report(results), flush=True)
    return results


if __name__ == "__main__":
    main()
