"""The reading process: the slices read as chunks, cut at their end, and shipped as Arrow buffers."""

from __future__ import annotations

import pytest
from ingest_events import topic_holding
from kafka.consumer.fetcher import ConsumerRecord

from lakeloop.ingest.chunks import OVERSIZE_VALUE_HEAD_BYTES, ChunkBuffer
from lakeloop.ingest.errors import KafkaSliceError
from lakeloop.ingest.options import IngestOptions
from lakeloop.ingest.reader_process import ReadRequest, chunk_frame, read_chunks
from lakeloop.ingest.slice_reader import CHUNK_SCHEMA, chunk_batch
from lakeloop.ingest.slices import PartitionSlice, open_consumer


def record(offset: int, key: bytes | None, value: bytes | None, size: int | None = None) -> ConsumerRecord:
    """A record as kafka-python's fetcher makes it (`size`: the value's size in Kafka, if it was cut)."""
    if size is None:
        size = len(value) if value is not None else -1
    return ConsumerRecord("t", 0, 0, offset, 1_700_000_000_000 + offset, 0, key, value, [], None, 1, size, -1)


def test_a_chunk_frame_is_the_records_columns_in_arrow_layout():
    records = [record(7, b"k1", b'{"a":1}'), record(8, None, None), record(10, b"", b""),
               record(11, b"key", b"x" * OVERSIZE_VALUE_HEAD_BYTES, size=50_000), record(12, None, b"{}")]

    index, position, batch = chunk_batch(chunk_frame(3, 13, records))

    assert (index, position) == (3, 13)
    assert batch.schema == CHUNK_SCHEMA
    batch.validate(full=True)
    assert batch.to_pydict() == {
        "offset": [7, 8, 10, 11, 12],
        "timestamp": [1_700_000_000_000 + offset for offset in (7, 8, 10, 11, 12)],
        "key": [b"k1", None, b"", b"key", None],
        "value": [b'{"a":1}', None, b"", b"x" * OVERSIZE_VALUE_HEAD_BYTES, b"{}"],
        "value_size": [7, -1, 0, 50_000, 2],
    }
    without_nulls = chunk_batch(chunk_frame(0, 1, [record(1, b"k", b"v")]))[2]
    assert without_nulls.column("key").null_count == without_nulls.column("value").null_count == 0


def test_slices_are_read_in_order_in_chunks_and_cut_at_their_end(kafka_broker):
    topic = topic_holding(kafka_broker.bootstrap, 2, [(n % 2, b"k", f"v{n}".encode(), None) for n in range(30)])
    options = IngestOptions(chunk_size=4, commit_group_id=None)
    request = ReadRequest({"bootstrap_servers": kafka_broker.bootstrap}, topic, options, max_value_bytes=100)
    slices = [PartitionSlice(1, 0, 3, 11), PartitionSlice(0, 0, 5, 5), PartitionSlice(0, 0, 2, 9)]
    consumer = open_consumer(request.client_config, options)
    chunker = ChunkBuffer(options.chunk_size, options.chunk_bytes)
    try:
        chunks = list(read_chunks(consumer, request, slices, chunker))
        assert [(index, [r.offset for r in records]) for index, _, records in chunks] == [
            (0, [3, 4, 5, 6]), (0, [7, 8, 9, 10]), (2, [2, 3, 4, 5]), (2, [6, 7, 8])]
        assert [r.value for r in chunks[0][2]] == [b"v7", b"v9", b"v11", b"v13"]  # partition 1 holds the odd ones
        assert all(position >= records[-1].offset + 1 for _, position, records in chunks)
        assert chunker.chunks == 4

        beyond_the_end = [PartitionSlice(0, 0, 13, 16)]  # the partition ends at 15
        stalled = ReadRequest(request.client_config, topic, IngestOptions(idle_timeout_s=3, poll_timeout_ms=100),
                              max_value_bytes=100)
        read = []
        with pytest.raises(KafkaSliceError, match=rf"{topic}\[0\]: no record for 3s at offset 15, before the "
                                                  r"slice end 16"):
            for _, _, records in read_chunks(consumer, stalled, beyond_the_end, ChunkBuffer(10, 1000)):
                read.extend(record.offset for record in records)
        assert read == []  # the slice's records wait in the chunk that never completes
    finally:
        consumer.close(autocommit=False)
