"""Reading Kafka in a child process: chunks in order, its errors raised in place, never outliving the ingestion."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ingest_events import MIDDLE, ms, topic_holding

from lakeloop.ingest.errors import KafkaSliceError, KafkaUnavailableError
from lakeloop.ingest.options import IngestOptions
from lakeloop.ingest.slice_reader import CHUNK_SCHEMA, ReaderProcessTraceback, SliceReader
from lakeloop.ingest.slices import PartitionSlice
from lakeloop.services import free_port

ENOUGH_TO_EXIT_S = 60  # how long a process told to go may take before the test gives up on it


@pytest.fixture
def twenty(kafka_broker) -> str:
    """A one-partition topic with 20 records, offsets 0 to 19, every third without a key, stamped MIDDLE + n ms."""
    return topic_holding(kafka_broker.bootstrap, 1, [(0, None if n % 3 == 0 else b"k%d" % n, b"v%d" % n,
                                                      ms(MIDDLE) + n) for n in range(20)])


def gone(pid: int) -> bool:
    """The process has exited (reaped, or a zombie waiting for its new parent to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def wait_until_gone(pid: int) -> bool:
    deadline = time.monotonic() + ENOUGH_TO_EXIT_S
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return gone(pid)


def test_chunks_come_in_order_as_arrow_batches_and_the_process_is_reaped(kafka_broker, twenty):
    options = IngestOptions(chunk_size=6, commit_group_id=None)
    with SliceReader({"bootstrap_servers": kafka_broker.bootstrap}, twenty, options, max_value_bytes=100) as reader:
        chunks = list(reader.read([PartitionSlice(0, 0, 2, 17)]))
    assert reader.stats.chunks == 3 and reader.stats.largest_chunk_bytes == len(b"v8v9v10v11v12v13")
    assert reader.stats.cpu_s > 0 and reader.stats.peak_rss_bytes > 0
    assert all(batch.schema == CHUNK_SCHEMA for _, batch, _ in chunks)
    assert [batch.num_rows for _, batch, _ in chunks] == [6, 6, 3]
    rows = [row for _, batch, _ in chunks for row in batch.to_pylist()]
    assert rows == [{"offset": n, "timestamp": ms(MIDDLE) + n, "key": None if n % 3 == 0 else b"k%d" % n,
                     "value": b"v%d" % n, "value_size": len(b"v%d" % n)} for n in range(2, 17)]
    assert {piece for piece, _, _ in chunks} == {PartitionSlice(0, 0, 2, 17)}
    assert gone(reader.pid)


def test_an_error_of_the_reading_process_is_raised_after_the_chunks_before_it(kafka_broker, twenty):
    # 3 s without a record: far longer than any fetch of the 20 records, even on a busy machine
    options = IngestOptions(chunk_size=5, idle_timeout_s=3, poll_timeout_ms=100, commit_group_id=None)
    received = []
    with SliceReader({"bootstrap_servers": kafka_broker.bootstrap}, twenty, options, max_value_bytes=100) as reader:
        with pytest.raises(KafkaSliceError, match=rf"{twenty}\[0\]: no record for 3s at offset 20, before the "
                                                  r"slice end 25") as raised:
            for _, batch, _ in reader.read([PartitionSlice(0, 0, 0, 25)]):
                received.extend(batch.column("offset").to_pylist())
    assert received == list(range(20))
    assert isinstance(raised.value.__cause__, ReaderProcessTraceback)
    assert "read_chunks" in str(raised.value.__cause__)  # where it was raised in the reading process
    assert gone(reader.pid)


def test_a_consumer_the_reading_process_cannot_open_fails_with_its_error_and_warnings(caplog):
    address = f"127.0.0.1:{free_port()}"
    options = IngestOptions(connect_attempts=2, connect_backoff_s=0.1, bootstrap_timeout_ms=300)
    with caplog.at_level(logging.WARNING, logger="lakeloop.ingest"):
        with SliceReader({"bootstrap_servers": address}, "ratings", options, max_value_bytes=100) as reader:
            assert wait_until_gone(reader.pid)  # it gave up before it was sent the slices
            with pytest.raises(KafkaUnavailableError, match=rf"unreachable at {address} after 2 attempts"):
                list(reader.read([PartitionSlice(0, 0, 0, 5)]))
    forwarded = [record.message for record in caplog.records if record.name == "lakeloop.ingest.slices"]
    assert len(forwarded) == 2  # logged in the reading process, and here by the logger that logged them there
    for attempt, message in enumerate(forwarded, start=1):
        assert message.startswith(f"Kafka at {address} not reachable (attempt {attempt}/2)")


def test_leaving_early_stops_the_reading_process(kafka_broker, twenty):
    options = IngestOptions(chunk_size=1, read_ahead_chunks=1, commit_group_id=None)
    with SliceReader({"bootstrap_servers": kafka_broker.bootstrap}, twenty, options, max_value_bytes=100) as reader:
        for _ in reader.read([PartitionSlice(0, 0, 0, 20)]):
            break  # the reader is blocked sending the next chunks
        assert not gone(reader.pid)
    assert gone(reader.pid)


INGESTING_PROCESS = """
import json, sys, time
from lakeloop.ingest.options import IngestOptions
from lakeloop.ingest.slice_reader import SliceReader
from lakeloop.ingest.slices import PartitionSlice

bootstrap, topic = json.loads(sys.argv[1])
reader = SliceReader({"bootstrap_servers": bootstrap}, topic, IngestOptions(chunk_size=1, read_ahead_chunks=1), 100)
next(reader.read([PartitionSlice(0, 0, 0, 20)]))
print(reader.pid, flush=True)
time.sleep(3600)
"""


def test_the_reading_process_never_outlives_the_ingesting_one(kafka_broker, twenty):
    ingesting = subprocess.Popen([sys.executable, "-c", INGESTING_PROCESS,
                                  json.dumps([kafka_broker.bootstrap, twenty])], stdout=subprocess.PIPE, text=True)
    try:
        reading = int(ingesting.stdout.readline())
        assert not gone(reading)
        os.kill(ingesting.pid, signal.SIGKILL)  # no clean-up runs: the reader sees its pipes' ends of file
        ingesting.wait()
        assert wait_until_gone(reading)
    finally:
        if ingesting.poll() is None:
            ingesting.kill()
            ingesting.wait()


def test_a_reading_process_that_dies_is_a_clear_error(kafka_broker, twenty):
    # the slice runs past the topic's 20 records, so the child is still waiting for more when it is killed (a slice
    # it could finish would fit in the pipe and end normally before the kill)
    options = IngestOptions(chunk_size=1, read_ahead_chunks=1, idle_timeout_s=120, commit_group_id=None)
    with SliceReader({"bootstrap_servers": kafka_broker.bootstrap}, twenty, options, max_value_bytes=100) as reader:
        chunks = reader.read([PartitionSlice(0, 0, 0, 40)])
        next(chunks)
        os.kill(reader.pid, signal.SIGKILL)
        with pytest.raises(KafkaSliceError, match=rf"the process reading {twenty} ended before the end of the "
                                                  r"slices \(killed by signal 9\)"):
            list(chunks)  # what it had sent, then the end of its pipe
