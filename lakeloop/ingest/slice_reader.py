"""Reading Kafka in a child process, a few chunks ahead of the decoding, which gets them as Arrow record batches.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator, Mapping
from multiprocessing.connection import Connection
from typing import Any

import pyarrow as pa

from lakeloop.ingest.errors import KafkaSliceError
from lakeloop.ingest.options import IngestOptions
from lakeloop.ingest.reader_process import (
    ALIGNMENT,
    CHUNK,
    CHUNK_HEADER,
    DONE,
    ERROR,
    LOG,
    ReaderStats,
    ReadRequest,
)
from lakeloop.ingest.slices import PartitionSlice

CHUNK_SCHEMA = pa.schema([
    pa.field("offset", pa.int64(), nullable=False),
    pa.field("timestamp", pa.int64(), nullable=False),
    pa.field("key", pa.binary()),
    pa.field("value", pa.binary()),
    pa.field("value_size", pa.int32(), nullable=False),
])
"""A chunk as the ingestion gets it: each record's offset, timestamp (epoch ms), key, value (an oversize one
cut to its head) and value_size (its size in Kafka, -1 for a null value)."""

STOP_TIMEOUT_S = 10.0  # how long a reading process told to stop may take to exit before it is killed


class ReaderProcessTraceback(Exception):
    """The traceback of an exception raised in the reading process, as its cause in the ingesting process."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f"\n\nIn the reading process:\n{self.text}"


class SliceReader:
    """Reads slices of a topic in a child process (`lakeloop.ingest.reader_process`) and hands over their chunks.

    kafka-python unpacks records in pure Python; in a thread next to the decoding it held the GIL for most
    of a run, and the two threads slowed each other down. The child has a GIL of its own. It is a fresh
    interpreter (`sys.executable -m lakeloop.ingest.reader_process`), not a fork: the ingesting process may
    have threads (Airflow's task runner, pyarrow's S3 client), and a fork copies their locks in whatever
    state they are. It starts as soon as the reader is made, so that its imports and its consumer's
    connection overlap the planning of the slices; `read` then sends it the slices.

    At most `read_ahead_chunks` chunks are on their way at once (framed in the child, queued, or being sent
    until this process has received them all); the child stops polling while they are. Leaving
    the `with` block (or `close`) stops the child if it is still running and reaps it; the child also ends
    by itself when this process dies, at the end of file of its control pipe.

    Args:
        client_config: kafka-python client options; the child opens its own consumer with them.
        topic: The topic to read.
        options: The run's options (chunking, timeouts, `read_ahead_chunks`).
        max_value_bytes: Values larger than this are cut to their head as soon as they are polled.
    """

    def __init__(self, client_config: Mapping[str, Any], topic: str, options: IngestOptions,
                 max_value_bytes: int) -> None:
        self.topic = topic
        self.stats: ReaderStats | None = None
        control_read, control_write = os.pipe()
        data_read, data_write = os.pipe()
        self._control = Connection(control_write, readable=False)
        self._data = Connection(data_read, writable=False)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "lakeloop.ingest.reader_process", str(control_read), str(data_write)],
                pass_fds=(control_read, data_write), stdin=subprocess.DEVNULL)
        except BaseException:
            self._control.close()
            self._data.close()
            raise
        finally:
            os.close(control_read)
            os.close(data_write)
        try:
            self._control.send_bytes(pickle.dumps(ReadRequest(dict(client_config), topic, options, max_value_bytes)))
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> SliceReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def read(self, slices: list[PartitionSlice]) -> Iterator[tuple[PartitionSlice, pa.RecordBatch, int]]:
        """(slice, chunk as a `CHUNK_SCHEMA` batch, consumer position after it) in partition then offset order.

        An exception of the child (`KafkaSliceError` when a partition stalls or the client fails, or
        `KafkaUnavailableError` when its consumer cannot connect) is raised here, after the chunks read
        before it, with its type and message; its traceback in the child is its cause. `stats` is set once
        every chunk was read.
        """
        try:
            self._control.send_bytes(pickle.dumps(slices))
        except BrokenPipeError:
            pass  # the child has already ended: its last frames (its error, if any) say why
        while True:
            try:
                frame = self._data.recv_bytes()
            except (EOFError, OSError):  # OSError: it ended in the middle of a frame
                raise KafkaSliceError(f"the process reading {self.topic} ended before the end of the slices "
                                      f"({self._ending()})") from None
            kind = frame[:1]
            if kind == CHUNK:
                index, position, batch = chunk_batch(frame)
                yield slices[index], batch, position
            elif kind == LOG:
                name, level, message = pickle.loads(frame[1:])
                logging.getLogger(name).log(level, "%s", message)
            elif kind == ERROR:
                error, text = pickle.loads(frame[1:])
                raise error from ReaderProcessTraceback(text)
            elif kind == DONE:
                self.stats = pickle.loads(frame[1:])
                return
            else:
                raise KafkaSliceError(f"the process reading {self.topic} sent a frame of unknown kind {kind!r}")

    @property
    def pid(self) -> int:
        """The reading process's id."""
        return self._process.pid

    def close(self) -> None:
        """Stop the reading process if it still runs (closing its pipes ends it) and reap it."""
        self._control.close()
        self._data.close()
        try:
            self._process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _ending(self) -> str:
        try:
            code = self._process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return "it still runs"
        return f"killed by signal {-code}" if code < 0 else f"exit status {code}"


def chunk_batch(frame: bytes) -> tuple[int, int, pa.RecordBatch]:
    """The slice index, the consumer position and the chunk of a `CHUNK` frame, its buffers used in place."""
    _, index, position, rows, *sizes = CHUNK_HEADER.unpack_from(frame)
    whole = pa.py_buffer(frame)
    buffers = []
    start = CHUNK_HEADER.size
    for size in sizes:
        buffers.append(whole.slice(start, size))
        start += size + -size % ALIGNMENT
    offset, timestamp, key_validity, key_offsets, key_data, validity, value_offsets, value_data, value_size = buffers
    return index, position, pa.RecordBatch.from_arrays([
        pa.Array.from_buffers(pa.int64(), rows, [None, offset]),
        pa.Array.from_buffers(pa.int64(), rows, [None, timestamp]),
        pa.Array.from_buffers(pa.binary(), rows, [key_validity or None, key_offsets, key_data]),
        pa.Array.from_buffers(pa.binary(), rows, [validity or None, value_offsets, value_data]),
        pa.Array.from_buffers(pa.int32(), rows, [None, value_size]),
    ], schema=CHUNK_SCHEMA)
