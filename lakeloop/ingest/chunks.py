"""The records of a slice grouped into chunks bounded by count and by value bytes; oversize values cut as read.

No numpy or pyarrow here: the reading process (`reader_process`) imports this module.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator
from typing import Any

from lakeloop.ingest.slices import value_size

OVERSIZE_VALUE_HEAD_BYTES = 1024
"""Bytes of an `oversize` value kept (in `value` of the rejected dataset): the rest is dropped as it is read."""


def without_oversize_values(records: list[Any], max_value_bytes: int) -> tuple[list[Any], list[int]]:
    """The records with every value above `max_value_bytes` cut to its first `OVERSIZE_VALUE_HEAD_BYTES` bytes,
    and the bytes of value each record still holds.

    Cut right after the poll, an oversize value is never buffered: the chunks, the decoding and the rejected
    rows only see its head, while the record's `serialized_value_size` still gives its full size (what the
    decoder judges). `records` are kafka-python `ConsumerRecord`s.
    """
    sizes = list(map(value_size, records))  # -1 for a null value
    if not sizes or (max(sizes) <= max_value_bytes and min(sizes) >= 0):
        return records, sizes
    kept = list(records)
    for index, size in enumerate(sizes):
        if size > max_value_bytes:
            kept[index] = records[index]._replace(value=records[index].value[:OVERSIZE_VALUE_HEAD_BYTES])
            sizes[index] = len(kept[index].value)
        elif size < 0:
            sizes[index] = 0
    return kept, sizes


class ChunkBuffer:
    """Groups a stream of records into chunks of at most `max_records` records and `max_bytes` bytes of values.

    A record whose value alone is larger than `max_bytes` makes a chunk of its own. `chunks` and
    `largest_chunk_bytes` count what was handed out, so a run can report how big its chunks really were.
    """

    def __init__(self, max_records: int, max_bytes: int) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.chunks = 0
        self.largest_chunk_bytes = 0
        self._records: list[Any] = []
        self._bytes = 0

    def add(self, records: list[Any], sizes: list[int]) -> Iterator[list[Any]]:
        """Buffer `records` (their values holding `sizes` bytes) and yield every chunk they complete, in order."""
        ends = list(itertools.accumulate(sizes))  # ends[i]: the bytes of records[:i + 1]
        start = 0
        while start < len(records):
            before = ends[start - 1] if start else 0
            limit = min(len(records), start + self.max_records - len(self._records))
            stop = bisect.bisect_right(ends, before + self.max_bytes - self._bytes, start, limit)
            if stop == start and not self._records:
                stop = start + 1  # larger than the whole budget: a chunk of its own
            if stop > start:
                self._records.extend(records[start:stop])
                self._bytes += ends[stop - 1] - before
                start = stop
            if start < len(records) or len(self._records) == self.max_records:
                yield self._complete()

    def flush(self) -> list[Any] | None:
        """The records buffered so far as a last chunk (None if there are none)."""
        return self._complete() if self._records else None

    def _complete(self) -> list[Any]:
        chunk = self._records
        self.chunks += 1
        self.largest_chunk_bytes = max(self.largest_chunk_bytes, self._bytes)
        self._records, self._bytes = [], 0
        return chunk
