"""Chunks of records bounded by count and by value bytes; oversize values cut as they are read."""

from __future__ import annotations

import itertools

from kafka.consumer.fetcher import ConsumerRecord

from lakeloop.ingest.chunks import OVERSIZE_VALUE_HEAD_BYTES, ChunkBuffer, without_oversize_values


def record(offset: int, value: bytes | None) -> ConsumerRecord:
    """A record as kafka-python's fetcher makes it."""
    size = len(value) if value is not None else -1
    return ConsumerRecord("t", 0, 0, offset, 0, 0, b"k", value, [], None, 1, size, -1)


def test_chunks_are_full_ordered_and_never_over_the_budget_unless_one_value_is():
    sizes = [300, 0, 700, 5000, 10, 990, 1000, 1, 1, 1, 1, 1, 1, 2000, 400, 600]
    polls = [(0, 3), (3, 4), (4, 13), (13, 16)]  # the records arrive in four polls
    buffer = ChunkBuffer(max_records=5, max_bytes=1000)
    chunks = [chunk for start, end in polls
              for chunk in buffer.add(list(range(start, end)), sizes[start:end])]
    chunks.append(buffer.flush())

    assert list(itertools.chain.from_iterable(chunks)) == list(range(len(sizes)))
    assert chunks == [[0, 1, 2], [3], [4, 5], [6], [7, 8, 9, 10, 11], [12], [13], [14, 15]]
    assert (buffer.chunks, buffer.largest_chunk_bytes) == (len(chunks), 5000)
    assert buffer.flush() is None


def test_oversize_values_keep_only_their_head_and_their_full_size():
    limit = 2000
    records = [record(0, b"a" * limit), record(1, None), record(2, b"b" * (limit + 1)), record(3, b"{}")]

    kept, sizes = without_oversize_values(records, limit)

    assert [r.value for r in kept] == [b"a" * limit, None, b"b" * OVERSIZE_VALUE_HEAD_BYTES, b"{}"]
    assert [r.serialized_value_size for r in kept] == [limit, -1, limit + 1, 2]
    assert sizes == [limit, 0, OVERSIZE_VALUE_HEAD_BYTES, 2]
    small = [record(0, b"{}")]
    assert without_oversize_values(small, limit) == (small, [2])
