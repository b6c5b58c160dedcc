"""The Arrow feed: a worker's rows → a local cache (`ArrowCache`, spilling to disk) → equal-size `tf.data` batches
(`BatchFeed`), no per-row Python; `BackgroundFill` trains on the first pass while the rows are still read.

TensorFlow is imported only by `BatchFeed.dataset`. See docs/tfspark.md.
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from tfspark.config import DEFAULT_CACHE_MEMORY_BYTES

if TYPE_CHECKING:
    import tensorflow as tf

FILL_AHEAD_BATCHES = 8

NumpyBatch = dict[str, np.ndarray]


class ArrowCache:
    """A worker's partition as Arrow record batches, held in memory up to a limit, then spilled to disk.

    Once the batches held in memory pass `memory_limit_bytes`, they and every later batch go to an Arrow
    IPC file in `spill_dir`; `batch(i)` then reads one record batch back at a time, so memory stays at
    about one record batch while training cycles over the partition.
    """

    def __init__(self, spill_dir: str | None = None, memory_limit_bytes: int = DEFAULT_CACHE_MEMORY_BYTES) -> None:
        self._spill_dir = spill_dir
        self._memory_limit = memory_limit_bytes
        self._in_memory: list[pa.RecordBatch | None] = []
        self._memory_bytes = 0
        self._handed_over = False
        self._lengths: list[int] = []
        self._schema: pa.Schema | None = None
        self._spill_path: str | None = None
        self._writer: pa.ipc.RecordBatchFileWriter | None = None
        self._reader: pa.ipc.RecordBatchFileReader | None = None
        self._source: pa.NativeFile | None = None

    @property
    def schema(self) -> pa.Schema | None:
        """The schema of the cached batches (None before the first batch)."""
        return self._schema

    @property
    def num_rows(self) -> int:
        """Rows cached so far."""
        return sum(self._lengths)

    @property
    def num_batches(self) -> int:
        """Non-empty record batches cached so far."""
        return len(self._lengths)

    @property
    def spilled(self) -> bool:
        """Whether the cache went to disk."""
        return self._spill_path is not None

    def would_spill(self, rows: int, sample: pa.RecordBatch) -> bool:
        """Whether `rows` rows as wide as `sample`'s would pass the memory limit (and so go to disk)."""
        return rows * sample.nbytes / max(sample.num_rows, 1) > self._memory_limit

    def batch_length(self, index: int) -> int:
        """Rows of record batch `index`, without reading it."""
        return self._lengths[index]

    def append(self, batch: pa.RecordBatch) -> None:
        """Add one record batch (empty batches are dropped)."""
        if batch.num_rows == 0:
            return
        if self._schema is None:
            self._schema = batch.schema
        elif not batch.schema.equals(self._schema):
            raise ValueError(f"record batch schema changed from {self._schema} to {batch.schema}")
        self._lengths.append(batch.num_rows)
        if self._writer is not None:
            self._writer.write_batch(batch)
            return
        self._in_memory.append(batch)
        self._memory_bytes += batch.nbytes
        if self._memory_bytes > self._memory_limit:
            self._spill()

    def _spill(self) -> None:
        handle, self._spill_path = tempfile.mkstemp(prefix="tfspark-cache-", suffix=".arrow", dir=self._spill_dir)
        os.close(handle)
        self._writer = pa.ipc.new_file(self._spill_path, self._schema)
        for batch in self._in_memory:
            self._writer.write_batch(batch)
        self._in_memory = []
        self._memory_bytes = 0

    def finish(self) -> None:
        """Stop accepting batches; a spilled cache is closed and reopened for reading."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._source = pa.OSFile(self._spill_path, "rb")
            self._reader = pa.ipc.open_file(self._source)

    def batch(self, index: int) -> pa.RecordBatch:
        """Record batch `index` (read from disk when spilled)."""
        if self._reader is not None:
            return self._reader.get_batch(index)
        if self._writer is not None:
            raise RuntimeError("call finish() before reading a spilled cache")
        if self._handed_over:
            raise RuntimeError("the cache's batches were handed over (BatchFeed.dataset() moved them into tensors); "
                               "read the dataset, or build a feed on a cache of its own")
        return self._in_memory[index]

    def hand_over(self) -> Iterator[pa.RecordBatch]:
        """The finished in-memory batches in order, each forgotten by the cache once handed on, so a consumer that
        copies them elsewhere holds the partition once, not twice; the cache keeps their lengths, and reading a
        batch afterwards raises."""
        if self.spilled:
            raise RuntimeError("only a cache held in memory is handed over")
        self._handed_over = True
        for index in range(len(self._in_memory)):
            batch, self._in_memory[index] = self._in_memory[index], None
            yield batch

    def close(self) -> None:
        """Release memory and delete the spill file."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._source is not None:
            self._source.close()
            self._source = None
        self._reader = None
        self._in_memory = []
        if self._spill_path is not None and os.path.exists(self._spill_path):
            os.remove(self._spill_path)

    def __enter__(self) -> ArrowCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def cache_partition(
    batches: Iterable[pa.RecordBatch],
    spill_dir: str | None = None,
    memory_limit_bytes: int = DEFAULT_CACHE_MEMORY_BYTES,
) -> ArrowCache:
    """Consume a partition's record batches into a finished `ArrowCache`."""
    cache = ArrowCache(spill_dir=spill_dir, memory_limit_bytes=memory_limit_bytes)
    try:
        for batch in batches:
            cache.append(batch)
        cache.finish()
    except BaseException:
        cache.close()
        raise
    return cache


class BackgroundFill:
    """Fills an `ArrowCache` from a partition's record batches in a thread, handing each batch on as it arrives.

    `stream()` yields the non-empty batches in arrival order. While the cache holds its batches in memory the
    reader runs ahead freely (the hand-over shares the cache's batches), so a partition that fits is read
    while TensorFlow starts; once the cache spills, the reader stays at most `ahead` batches ahead of the
    stream, so memory stays bounded. Once the stream ends the cache is finished and holds the `rows` planned
    for it (else the fill fails). A stream that is not read to its end (or never taken) stops holding the
    reader back; `wait()` then lets the fill complete. An error while reading reaches whoever reads the
    stream or waits.
    """

    _END = object()

    def __init__(self, batches: Iterable[pa.RecordBatch], cache: ArrowCache, rows: int,
                 ahead: int = FILL_AHEAD_BATCHES) -> None:
        self.cache = cache
        self.rows = rows
        self.seconds: float | None = None
        self._batches = batches
        self._ahead = max(1, ahead)
        self._handoff: queue.Queue = queue.Queue()
        self._room = threading.Condition()
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._stopping = threading.Event()
        self._first: pa.RecordBatch | None = None
        self._first_ready = threading.Event()
        self._error: BaseException | None = None
        self._stream_taken = False
        self._thread = threading.Thread(target=self._fill, name="tfspark-fill", daemon=True)

    def start(self) -> BackgroundFill:
        """Start reading; returns self."""
        self._thread.start()
        return self

    def _hand_on(self, item: object) -> None:
        with self._room:
            while self._forwarding.is_set() and not self._stopping.is_set():
                if item is self._END or not self.cache.spilled or self._handoff.qsize() < self._ahead:
                    self._handoff.put(item)
                    return
                self._room.wait(timeout=0.1)

    def _fill(self) -> None:
        started = time.monotonic()
        try:
            for batch in self._batches:
                if self._stopping.is_set():
                    return
                if batch.num_rows == 0:
                    continue
                self.cache.append(batch)
                if self._first is None:
                    self._first = batch
                    self._first_ready.set()
                self._hand_on(batch)
            self.cache.finish()
            if self.cache.num_rows != self.rows:
                raise ValueError(f"the partition has {self.cache.num_rows} rows, {self.rows} were planned")
            self.seconds = time.monotonic() - started
        except BaseException as error:  # handed to the consumer, which raises it
            self._error = error
        finally:
            self._first_ready.set()
            self._hand_on(self._END)

    def first_batch(self) -> pa.RecordBatch:
        """The first non-empty record batch, once it has been read."""
        self._first_ready.wait()
        if self._first is None:
            self._raise_if_failed()
            raise ValueError("the feed has no rows")
        return self._first

    @property
    def can_stream(self) -> bool:
        """Whether `stream()` may still be taken: once only, and not after `wait()` or `close()`."""
        return not self._stream_taken and self._forwarding.is_set()

    def stream(self) -> Iterator[pa.RecordBatch]:
        """The record batches in arrival order, as they are read (once only)."""
        if not self.can_stream:
            raise RuntimeError("the fill's stream was already taken or released")
        self._stream_taken = True
        return self._stream()

    def _stream(self) -> Iterator[pa.RecordBatch]:
        try:
            while True:
                item = self._handoff.get()
                with self._room:
                    self._room.notify()
                if item is self._END:
                    self._raise_if_failed()
                    return
                yield item
        finally:
            self._release()

    def _release(self) -> None:
        self._forwarding.clear()
        with self._room:
            self._room.notify()
        while True:
            try:
                self._handoff.get_nowait()
            except queue.Empty:
                return

    def wait(self) -> None:
        """Block until the cache is complete and finished; raise the reader's error if it failed."""
        self._release()
        self._thread.join()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Stop the reader (between two batches) and wait for it."""
        self._stopping.set()
        self._release()
        if self._thread.is_alive():
            self._thread.join()


@dataclass(frozen=True)
class ColumnSpec:
    """How one Arrow column becomes a tensor: numpy dtype and, for fixed-length lists, the row width."""

    name: str
    dtype: np.dtype
    width: int | None = None

    @property
    def shape_suffix(self) -> tuple[int, ...]:
        """The tensor shape after the batch dimension: () for scalars, (width,) for fixed-length lists."""
        return () if self.width is None else (self.width,)


def _numpy_dtype(arrow_type: pa.DataType, column: str) -> np.dtype:
    if pa.types.is_floating(arrow_type):
        return np.dtype(np.float32)
    if pa.types.is_int64(arrow_type) or pa.types.is_uint32(arrow_type):
        return np.dtype(np.int64)
    if pa.types.is_integer(arrow_type) and arrow_type.bit_width <= 32:
        return np.dtype(np.int32)
    if pa.types.is_boolean(arrow_type):
        return np.dtype(np.bool_)
    raise TypeError(
        f"column {column!r} has type {arrow_type}; the feed takes numeric scalars and fixed-length numeric "
        "arrays (turn strings into ids and timestamps into numbers in pre_train)"
    )


def _is_list(arrow_type: pa.DataType) -> bool:
    return pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type)


def column_specs(batch: pa.RecordBatch) -> dict[str, ColumnSpec]:
    """Tensor specs of every column of `batch`; list columns take their width from this batch.

    Floating columns become float32 (Spark's doubles would otherwise meet float32 weights), integers keep
    64 or 32 bits, booleans stay booleans.
    """
    specs = {}
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if _is_list(column.type):
            widths = np.diff(column.offsets.to_numpy()) if not pa.types.is_fixed_size_list(column.type) else None
            width = column.type.list_size if widths is None else int(widths[0]) if len(widths) else 0
            specs[name] = ColumnSpec(name, _numpy_dtype(column.type.value_type, name), width)
        else:
            specs[name] = ColumnSpec(name, _numpy_dtype(column.type, name))
    return specs


def column_to_numpy(column: pa.Array, spec: ColumnSpec) -> np.ndarray:
    """One Arrow column → a numpy array of `spec`'s dtype: (rows,) for scalars, (rows, width) for lists."""
    if column.null_count:
        raise ValueError(f"column {spec.name!r} has {column.null_count} nulls; fill or drop them in pre_train")
    if spec.width is None:
        values = column.to_numpy(zero_copy_only=False)
        return values.astype(spec.dtype, copy=False)
    if not pa.types.is_fixed_size_list(column.type):
        widths = np.diff(column.offsets.to_numpy())
        if len(widths) and (widths.min() != spec.width or widths.max() != spec.width):
            raise ValueError(
                f"column {spec.name!r} must hold arrays of one length ({spec.width}); "
                f"found lengths {widths.min()}..{widths.max()}"
            )
    flat = column.flatten()
    if flat.null_count:
        raise ValueError(f"column {spec.name!r} has null array elements; fill them in pre_train")
    return flat.to_numpy(zero_copy_only=False).astype(spec.dtype, copy=False).reshape(len(column), spec.width)


def record_batch_to_numpy(batch: pa.RecordBatch, specs: dict[str, ColumnSpec]) -> NumpyBatch:
    """A record batch → {column: numpy array}, vectorised per column (zero-copy where Arrow allows)."""
    return {name: column_to_numpy(batch.column(name), spec) for name, spec in specs.items()}


def _take(columns: NumpyBatch, index: slice | np.ndarray) -> NumpyBatch:
    return {name: values[index] for name, values in columns.items()}


def _concat(first: NumpyBatch, second: NumpyBatch) -> NumpyBatch:
    return {name: np.concatenate([first[name], second[name]]) for name in first}


TENSOR_ALIGNMENT = 64  # bytes: TensorFlow's CPU kernels require it of every tensor's buffer
SHARED_DTYPES = (np.dtype(np.float32), np.dtype(np.int32), np.dtype(np.int64))


def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised array whose buffer starts on a `TENSOR_ALIGNMENT` boundary."""
    size = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(size + TENSOR_ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % TENSOR_ALIGNMENT
    return raw[start:start + size].view(dtype).reshape(shape)


def _as_tensor(values: np.ndarray) -> tf.Tensor:
    """A CPU tensor over `values`' own buffer (DLPack: no copy) when it is aligned and of a shared dtype, so a column
    is held once; otherwise a copy."""
    import tensorflow as tf

    if values.dtype in SHARED_DTYPES and values.ctypes.data % TENSOR_ALIGNMENT == 0 and values.flags.c_contiguous:
        return tf.experimental.dlpack.from_dlpack(values.__dlpack__())
    return tf.constant(values)


class BatchFeed:
    """Cuts an `ArrowCache` into `total_batches` batches of exactly `batch_size` rows.

    The cache is read as an endless stream of passes; each pass visits the record batches in a seeded
    random order and shuffles rows within each record batch (when `shuffle`), so a worker whose partition is
    short simply starts its next pass earlier and every worker yields the same number of batches.
    Batch k always holds the same rows for a given seed, so a resumed run starts at `start_batch` by
    arithmetic, skipping whole record batches without reading them.

    With a `fill` (a `BackgroundFill` still reading the partition into `cache`, its rows planned), the first
    pass visits the record batches in arrival order, rows still shuffled within each: the first
    iteration from batch 0 trains on the batches as they are read; later passes, and any later or resumed
    iteration, read the finished cache.
    """

    def __init__(
        self,
        cache: ArrowCache,
        label_column: str,
        batch_size: int,
        total_batches: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        fill: BackgroundFill | None = None,
    ) -> None:
        if fill is not None and fill.cache is not cache:
            raise ValueError("a feed on a background fill reads the fill's cache")
        self.rows = cache.num_rows if fill is None else fill.rows
        if self.rows == 0:
            raise ValueError("the feed has no rows")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        first = cache.batch(0) if fill is None else fill.first_batch()
        if label_column not in first.schema.names:
            raise ValueError(f"label column {label_column!r} not in {first.schema.names}")
        self.cache = cache
        self.label_column = label_column
        self.batch_size = batch_size
        self.total_batches = total_batches
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.specs = column_specs(first)
        self._fill = fill
        self._start_batch = 0
        self._start_variable: tf.Variable | None = None
        self._dataset: tf.data.Dataset | None = None

    @property
    def start_batch(self) -> int:
        """The batch the next iteration of `dataset()` starts at (a resumed run sets it)."""
        return self._start_batch

    @start_batch.setter
    def start_batch(self, batch: int) -> None:
        self._start_batch = batch
        if self._start_variable is not None:
            self._start_variable.assign(batch)

    @property
    def feature_names(self) -> list[str]:
        """Every column but the label."""
        return [name for name in self.specs if name != self.label_column]

    def _pass_order(self, pass_index: int) -> np.ndarray:
        if not self.shuffle or (pass_index == 0 and self._fill is not None):
            return np.arange(self.cache.num_batches)
        return np.random.default_rng([self.seed, self.rank, pass_index]).permutation(self.cache.num_batches)

    def _visits(self, pass_index: int, stream: Iterator[pa.RecordBatch] | None
                ) -> Iterator[tuple[int, int, Callable[[], pa.RecordBatch]]]:
        """(index, rows, read) of each record batch of a pass, from the fill's stream or the finished cache."""
        if stream is not None:
            for index, batch in enumerate(stream):
                yield index, batch.num_rows, lambda batch=batch: batch
            return
        for index in self._pass_order(pass_index):
            yield index, self.cache.batch_length(index), lambda index=index: self.cache.batch(index)

    def _row_order(self, batch_index: int, pass_index: int, length: int) -> np.ndarray | None:
        """The order a pass takes the rows of record batch `batch_index` in (None: as stored)."""
        if not self.shuffle:
            return None
        return np.random.default_rng([self.seed, self.rank, pass_index, batch_index]).permutation(length)

    def _load(self, batch: pa.RecordBatch, batch_index: int, pass_index: int) -> NumpyBatch:
        columns = record_batch_to_numpy(batch, self.specs)
        order = self._row_order(batch_index, pass_index, batch.num_rows)
        return columns if order is None else _take(columns, order)

    def run_order(self) -> np.ndarray:
        """Which rows of the finished cache (its record batches end to end) batches 0 .. `total_batches - 1` hold,
        shape `(total_batches, batch_size)`: the rows `iter_chunks` cuts, in its order."""
        lengths = [self.cache.batch_length(index) for index in range(self.cache.num_batches)]
        starts = np.concatenate([[0], np.cumsum(lengths)])
        dtype = np.int32 if self.rows < 2**31 else np.int64
        needed, parts, pass_index = self.total_batches * self.batch_size, [], 0
        while needed > 0:
            for batch_index in self._pass_order(pass_index):
                if needed <= 0:
                    break
                order = self._row_order(batch_index, pass_index, lengths[batch_index])
                rows = np.arange(lengths[batch_index], dtype=dtype) if order is None else order.astype(dtype)
                parts.append(rows[:needed] + dtype(starts[batch_index]))
                needed -= len(parts[-1])
            pass_index += 1
        return np.concatenate(parts).reshape(self.total_batches, self.batch_size)

    def _first_pass_stream(self, start_batch: int) -> Iterator[pa.RecordBatch] | None:
        """The fill's stream for an iteration from batch 0 while it is untaken; otherwise wait for the cache."""
        if self._fill is None:
            return None
        if start_batch == 0 and self._fill.can_stream:
            return self._fill.stream()
        self._fill.wait()
        return None

    def iter_chunks(self, start_batch: int = 0) -> Iterator[tuple[NumpyBatch, np.ndarray]]:
        """Yield batches number `start_batch` .. `total_batches - 1` in chunks of consecutive batches.

        A chunk is `(features, label)` whose arrays have shape `(n, batch_size, ...)`: the n batches cut from
        one record batch (with the rows left over from the previous one), a reshaped view where possible.
        Handing TensorFlow one chunk instead of n batches divides the per-element cost of `from_generator`.
        """
        remaining = self.total_batches - start_batch
        if remaining <= 0:
            return
        stream = self._first_pass_stream(start_batch)
        pass_index, offset = divmod(start_batch * self.batch_size, self.rows)
        carry: NumpyBatch | None = None
        while True:
            for batch_index, length, read in self._visits(pass_index, stream):
                if offset >= length:
                    offset -= length
                    continue
                columns = self._load(read(), batch_index, pass_index)
                if offset:
                    columns, offset = _take(columns, slice(offset, None)), 0
                if carry is not None:
                    columns = _concat(carry, columns)
                rows = len(columns[self.label_column])
                count = min(rows // self.batch_size, remaining)
                used = count * self.batch_size
                if count:
                    chunk = {
                        name: values[:used].reshape(count, self.batch_size, *values.shape[1:])
                        for name, values in columns.items()
                    }
                    label = chunk.pop(self.label_column)
                    yield chunk, label
                    remaining -= count
                    if remaining == 0:
                        return
                carry = _take(columns, slice(used, None)) if used < rows else None
            if stream is not None:
                stream = None
                self._fill.wait()
            pass_index += 1

    def iter_numpy(self, start_batch: int = 0) -> Iterator[tuple[NumpyBatch, np.ndarray]]:
        """Yield `(features, label)` numpy batches number `start_batch` .. `total_batches - 1`, one by one."""
        for features, label in self.iter_chunks(start_batch):
            for index in range(len(label)):
                yield {name: values[index] for name, values in features.items()}, label[index]

    def element_spec(self) -> tuple[dict[str, tf.TensorSpec], tf.TensorSpec]:
        """The `tf.data` element spec: ({feature: TensorSpec}, label TensorSpec), batch dimension fixed."""
        import tensorflow as tf

        def spec(column: ColumnSpec) -> tf.TensorSpec:
            return tf.TensorSpec((self.batch_size, *column.shape_suffix), tf.as_dtype(column.dtype), column.name)

        features = {name: spec(self.specs[name]) for name in self.feature_names}
        return features, spec(self.specs[self.label_column])

    def dataset(self) -> tf.data.Dataset:
        """A `tf.data.Dataset` of `(features, label)` batches starting at `self.start_batch` when iterated.

        `start_batch` is read each time an iterator is created, so a training loop that restores a
        checkpoint sets it before iterating and the feed resumes there. A cache that stays in memory becomes
        whole-column tensors that every batch gathers its rows from, inside TensorFlow (a partition read in the
        background is waited for first), and hands its batches over (`ArrowCache.hand_over`), so the worker holds the
        partition once; a cache on disk is read chunk by chunk through `from_generator`, whose
        Python in the input pipeline costs a 2-core worker two thirds of its training speed (docs/tfspark.md).
        Either way batch k holds the same rows. Built once (later calls return it); auto-sharding is off: the partition
        already is this worker's shard.
        """
        import tensorflow as tf

        if self._dataset is None:
            dataset = self._in_memory_dataset() if self._stays_in_memory() else self._chunk_dataset()
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
            self._dataset = dataset.with_options(options)
        return self._dataset

    def _stays_in_memory(self) -> bool:
        """Whether the finished cache is in memory; a fill expected to stay there is waited for."""
        if self._fill is not None:
            if self.cache.would_spill(self.rows, self._fill.first_batch()):
                return False
            self._fill.wait()
        return not self.cache.spilled

    def _in_memory_dataset(self) -> tf.data.Dataset:
        import tensorflow as tf

        order = tf.constant(self.run_order())
        pool = pa.default_memory_pool()
        pool.release_unused()  # what filling the cache freed (read buffers) goes back to the system before the copy
        arrays = {name: _aligned_empty((self.rows, *spec.shape_suffix), spec.dtype)
                  for name, spec in self.specs.items()}
        offset = 0
        for batch in self.cache.hand_over():
            for name, values in record_batch_to_numpy(batch, self.specs).items():
                arrays[name][offset:offset + batch.num_rows] = values
            offset += batch.num_rows
        del batch
        pool.release_unused()
        columns = {name: _as_tensor(arrays.pop(name)) for name in list(arrays)}
        self._start_variable = tf.Variable(self._start_batch, dtype=tf.int64, trainable=False)
        start = self._start_variable

        def batches(_: tf.Tensor) -> tf.data.Dataset:
            return tf.data.Dataset.from_tensor_slices(order[start.read_value():])

        def gather(rows: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
            features = {name: tf.gather(columns[name], rows) for name in self.feature_names}
            return features, tf.gather(columns[self.label_column], rows)

        dataset = tf.data.Dataset.range(1).flat_map(batches)
        return dataset.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    def _chunk_dataset(self) -> tf.data.Dataset:
        import tensorflow as tf

        features, label = self.element_spec()
        chunk_spec = tf.nest.map_structure(
            lambda spec: tf.TensorSpec((None, *spec.shape), spec.dtype, spec.name), (features, label)
        )
        dataset = tf.data.Dataset.from_generator(
            lambda: self.iter_chunks(self.start_batch), output_signature=chunk_spec
        ).unbatch()
        return dataset.prefetch(tf.data.AUTOTUNE)
