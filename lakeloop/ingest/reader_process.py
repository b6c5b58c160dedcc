"""The reading process of an ingestion: reads the planned slices from Kafka and ships them to the ingesting
process chunk by chunk, as Arrow buffers.

kafka-python unpacks every record in pure Python. In a process of its own it has a GIL of its own, so the
ingesting process decodes, validates and writes a chunk while this one reads the next ones
(`lakeloop.ingest.slice_reader.SliceReader` starts it; see docs/ingestion.md). The process is started for each
run, so it imports only the standard library, kafka-python and lakeloop's light modules: pyarrow would add a
quarter of a second to its start (and its first `pa.array` call imports pandas, about a second more).

Run as `python -m lakeloop.ingest.reader_process CONTROL_FD DATA_FD`, two pipes carrying messages framed by
`multiprocessing.connection`:

- control, from the ingesting process: a pickled `ReadRequest` (the process opens its consumer as soon as
  it has it, while the ingesting process plans the slices), then the pickled list of `PartitionSlice`s to
  read, then nothing: its end of file, whether the ingesting process closed it or died, ends this process
  at once (`_watch_control`), so it never outlives the run.
- data, to the ingesting process: frames whose first byte is their kind: `CHUNK` (`chunk_frame`), `LOG`
  (a warning of this process, logged by the ingesting one), `ERROR` (the exception that ended the reading,
  pickled with its traceback) or `DONE` (a pickled `ReaderStats`, after the last chunk).
"""

from __future__ import annotations

import bisect
import functools
import logging
import operator
import os
import pickle
import queue
import signal
import struct
import sys
import threading
import time
import traceback
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from lakeloop.ingest.chunks import ChunkBuffer, without_oversize_values
from lakeloop.ingest.errors import IngestError, KafkaSliceError
from lakeloop.ingest.options import IngestOptions
from lakeloop.ingest.slices import PartitionSlice, offset_of, open_consumer, value_size

CHUNK, LOG, ERROR, DONE = b"c", b"l", b"e", b"d"

CHUNK_HEADER = struct.Struct("<c7xqqq9q")
"""A chunk frame's header: its kind, the index of its slice in the list sent, the consumer's position after
the poll that completed it, its records, and the sizes of the buffers that follow (see `chunk_frame`)."""

ALIGNMENT = 8  # every buffer of a chunk frame starts at a multiple of this, as Arrow's buffers should


@dataclass(frozen=True)
class ReadRequest:
    """What the reading process is asked to open: a consumer with the run's client options, for `topic`."""

    client_config: dict[str, Any]
    topic: str
    options: IngestOptions
    max_value_bytes: int


@dataclass(frozen=True)
class ReaderStats:
    """What the reading process reports after its last chunk: the chunks it made and the bytes of values of
    the largest (what `chunk_bytes` bounds), its CPU seconds and its peak resident memory."""

    chunks: int
    largest_chunk_bytes: int
    cpu_s: float
    peak_rss_bytes: int


def read_chunks(consumer: Any, request: ReadRequest, slices: list[PartitionSlice],
                chunker: ChunkBuffer) -> Iterator[tuple[int, int, list[Any]]]:
    """(slice index, consumer position, records) in partition then offset order, in the chunks `chunker`
    makes of them (the last of each slice may be short); oversize values are cut as soon as they are polled.

    Raises:
        KafkaSliceError: a partition yielded nothing for `idle_timeout_s` before its end offset, or the
            client failed.
    """
    from kafka import TopicPartition
    from kafka.errors import KafkaError

    topic, options = request.topic, request.options
    for index, piece in enumerate(slices):
        if piece.size <= 0:
            continue
        tp = TopicPartition(topic, piece.partition)
        position = piece.start_offset
        try:
            consumer.assign([tp])
            consumer.seek(tp, piece.start_offset)
            last_record_at = time.monotonic()
            while position < piece.end_offset:
                records = consumer.poll(timeout_ms=options.poll_timeout_ms).get(tp, [])  # a whole fetch
                position = consumer.position(tp)
                if records:
                    last_record_at = time.monotonic()
                    if records[-1].offset >= piece.end_offset:
                        records = records[:bisect.bisect_left(records, piece.end_offset, key=offset_of)]
                    records, sizes = without_oversize_values(records, request.max_value_bytes)
                    for chunk in chunker.add(records, sizes):
                        yield index, position, chunk
                elif time.monotonic() - last_record_at > options.idle_timeout_s:
                    raise KafkaSliceError(
                        f"{topic}[{piece.partition}]: no record for {options.idle_timeout_s:.0f}s at offset "
                        f"{position}, before the slice end {piece.end_offset}; is the broker still up?")
        except (KafkaError, OSError) as error:  # raised by the client only
            raise KafkaSliceError(f"reading {topic}[{piece.partition}] at offsets "
                                  f"[{piece.start_offset}, {piece.end_offset}) failed: {error}") from error
        rest = chunker.flush()
        if rest:
            yield index, position, rest


def chunk_frame(index: int, position: int, records: list[Any]) -> bytes:
    """A chunk of kafka-python records as one frame: `CHUNK_HEADER`, then the buffers of the columns
    offset (int64), timestamp (int64), key (binary), value (binary) and value_size (int32: the value's
    size in Kafka, -1 for a null value, also for an oversize value cut to its head) in Arrow's layout.

    A binary column is three buffers: validity (empty when no value is null), int32 offsets and data. Each
    buffer is padded to `ALIGNMENT`; the header gives the sizes unpadded. Building these costs about
    0.6 µs a record, Python's loops over the records included; the ingesting process wraps them as Arrow
    arrays without copying.
    """
    buffers = [_fixed("q", map(offset_of, records)), _fixed("q", map(_timestamp_of, records)),
               *_binary(list(map(_key_of, records))), *_binary(list(map(_value_of, records))),
               _fixed("i", map(value_size, records))]
    header = CHUNK_HEADER.pack(CHUNK, index, position, len(records), *map(len, buffers))
    return b"".join([header, *(buffer + bytes(-len(buffer) % ALIGNMENT) for buffer in buffers)])


_timestamp_of = operator.attrgetter("timestamp")
_key_of = operator.attrgetter("key")
_value_of = operator.attrgetter("value")


def _fixed(typecode: str, numbers: Iterable[int]) -> bytes:
    return array(typecode, numbers).tobytes()


def _binary(items: list[bytes | None]) -> list[bytes]:
    """Validity, offsets and data buffers of a binary column."""
    validity = b""
    if None in items:
        bits = bytearray((len(items) + 7) // 8)
        for index, item in enumerate(items):
            if item is not None:
                bits[index >> 3] |= 1 << (index & 7)
        validity = bytes(bits)
        items = [item or b"" for item in items]
    return [validity, _fixed("i", accumulate(map(len, items), initial=0)), b"".join(items)]


class _Sender:
    """Sends frames to the ingesting process from a thread of its own, at most `depth` of them at once.

    The thread spends its time in `write`, without the GIL, while the main thread polls Kafka. A frame
    counts from before it is built until the ingesting process has received all of it, so `put` blocks while
    `depth` frames are queued or being sent, which stops the reading until the ingesting process takes one.
    """

    def __init__(self, connection: Connection, depth: int) -> None:
        self._connection = connection
        self._slots = threading.Semaphore(depth)
        self._frames: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="lakeloop-ingest-sender", daemon=True)
        self._thread.start()

    def put(self, build: Callable[[], bytes]) -> None:
        """Queue the frame `build` makes, once fewer than `depth` frames are queued or being sent."""
        self._slots.acquire()
        self._frames.put(build())

    def close(self) -> None:
        """Send what waits, then stop the thread."""
        self._frames.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (frame := self._frames.get()) is not None:
            try:
                self._connection.send_bytes(frame)
            except OSError:  # the ingesting process closed its end or is gone: nobody will read the rest
                os._exit(1)
            self._slots.release()


class _Forward(logging.Handler):
    """Hands this process's warnings to the ingesting process, which logs them in its own log."""

    def __init__(self, sender: _Sender) -> None:
        super().__init__(logging.WARNING)
        self._sender = sender

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = LOG + pickle.dumps((record.name, record.levelno, record.getMessage()))
            self._sender.put(lambda: message)
        except Exception:
            self.handleError(record)


def _learn_the_topic(consumer: Any, topic: str) -> None:
    """Fetch the topic's metadata (its partitions' leaders) now, while the slices are being planned: a first
    poll that has to fetch it waits about 0.2 s, against 0.1 s for the metadata and a few ms for the poll."""
    from kafka.errors import KafkaError

    try:
        consumer.partitions_for_topic(topic)
    except KafkaError:
        pass  # only a head start: the first poll fetches the metadata again, and reports what fails


def _watch_control(control: Connection, slices: queue.Queue[list[PartitionSlice]]) -> None:
    """Hand the slices to the main thread, then end the process when the ingesting process closes the
    control pipe or dies (nothing else is sent on it)."""
    try:
        slices.put(pickle.loads(control.recv_bytes()))
        while True:
            control.recv_bytes()
    except (EOFError, OSError):
        pass
    os._exit(0)


def _error_frame(error: BaseException) -> bytes:
    """The exception pickled with its traceback, or an `IngestError` naming it if it does not pickle."""
    text = "".join(traceback.format_exception(error))
    try:
        payload = pickle.dumps((error, text))
        pickle.loads(payload)  # some exceptions pickle but cannot be made again from their arguments
    except Exception:
        payload = pickle.dumps((IngestError(f"the reading process failed: {type(error).__name__}: {error}"), text))
    return ERROR + payload


def peak_rss_bytes() -> int:
    """This process's peak resident memory: VmHWM, which an exec resets (getrusage's ru_maxrss keeps the peak
    of the process that started this one when that was higher)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main(argv: list[str] | None = None) -> None:
    """Serve one run: open a consumer for the request, read the slices, ship their chunks, report, exit."""
    control_fd, data_fd = (int(arg) for arg in (sys.argv[1:] if argv is None else argv))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the ingesting process decides
    control = Connection(control_fd, writable=False)
    try:
        request: ReadRequest = pickle.loads(control.recv_bytes())
    except EOFError:
        return
    sender = _Sender(Connection(data_fd, readable=False), request.options.read_ahead_chunks)
    planned: queue.Queue[list[PartitionSlice]] = queue.Queue(maxsize=1)
    threading.Thread(target=_watch_control, args=(control, planned), name="lakeloop-ingest-control",
                     daemon=True).start()
    logging.getLogger().addHandler(_Forward(sender))
    logging.getLogger().setLevel(logging.WARNING)
    try:
        chunker = ChunkBuffer(request.options.chunk_size, request.options.chunk_bytes)
        consumer = open_consumer(request.client_config, request.options)
        try:
            _learn_the_topic(consumer, request.topic)
            slices = planned.get()
            for index, position, records in read_chunks(consumer, request, slices, chunker):
                sender.put(functools.partial(chunk_frame, index, position, records))
        finally:
            consumer.close(autocommit=False)
        stats = ReaderStats(chunker.chunks, chunker.largest_chunk_bytes, time.process_time(), peak_rss_bytes())
        sender.put(lambda: DONE + pickle.dumps(stats))
    except BaseException as error:  # raised in the ingesting process, at its place after the chunks before it
        sender.put(functools.partial(_error_frame, error))
    sender.close()


if __name__ == "__main__":
    from lakeloop.ingest import reader_process  # run it as itself: what it pickles must name this module, not __main__

    reader_process.main()
