"""Kafka → lake ingestion against the real embedded broker: exact slices, idempotence, atomicity, rejects."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime, timedelta
from itertools import zip_longest
from pathlib import Path

import psutil
import pyarrow as pa
import pytest
from ingest_events import MALFORMED, MIDDLE, event, ms
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient
from pyarrow import fs as pafs

from lakeloop.delta import partition_files, partition_summary, read_partition
from lakeloop.ingest.chunks import OVERSIZE_VALUE_HEAD_BYTES
from lakeloop.ingest.decode import REJECTED_SCHEMA
from lakeloop.ingest.errors import KafkaSliceError, KafkaUnavailableError, LakeWriteError, RejectionRateExceeded
from lakeloop.ingest.interval import ingest_interval, read_manifest
from lakeloop.ingest.options import COMMIT_GROUP_ID, IngestOptions
from lakeloop.ingest.schema import RATINGS_SCHEMA, FieldKind, FieldSpec, RecordSchema
from lakeloop.lake import Lake, partition_path
from lakeloop.services import free_port
from tests.delta_protocol import live_files, read_day
from tests.legacy_manifest import write_manifest_day

HOUR = timedelta(hours=1)
LARGEST_TEST_MESSAGE = 8 * 1024 * 1024
DAY = timedelta(days=1)
SMALL = IngestOptions(chunk_size=7, row_group_size=10, progress_interval_s=0.0)
EXPECTED_COLUMNS = pa.schema([("event_id", pa.string()), ("user_id", pa.string()), ("item_id", pa.string()),
                              ("rating", pa.float64()), ("ts", pa.timestamp("ms", tz="UTC"))])


def new_topic(bootstrap: str, partitions: int, max_message_bytes: int | None = None) -> str:
    topic = f"ingest-{uuid.uuid4().hex[:10]}"
    configs = {"retention.ms": "-1"}
    if max_message_bytes is not None:
        configs["max.message.bytes"] = str(max_message_bytes)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics({topic: {"num_partitions": partitions, "replication_factor": 1, "configs": configs}},
                        wait_for_metadata=True)
    admin.close()
    return topic


def produce(bootstrap: str, topic: str, records: list[tuple[int, datetime, bytes | None, bytes | None]]) -> list[int]:
    """Send (partition, record timestamp, key, value) in order; return the offsets."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                             max_request_size=LARGEST_TEST_MESSAGE)
    futures = [producer.send(topic, partition=partition, timestamp_ms=ms(at), key=key, value=value)
               for partition, at, key, value in records]
    producer.flush()
    offsets = [future.get(timeout=30).offset for future in futures]
    producer.close()
    return offsets


def ingest(broker, topic: str, lake: Path, start: datetime, options: IngestOptions = SMALL, **kwargs):
    return ingest_interval({"bootstrap_servers": broker.bootstrap}, topic, lake, start, start + DAY,
                           options=options, **kwargs)


def raw_rows(lake: Path, day: date, dataset: str = "raw/ratings") -> pa.Table:
    """The day's rows of the Delta table as a reader knowing only the Delta protocol reads them."""
    rows = read_day(lake / dataset, day)
    assert rows is not None, f"{dataset} has no {day}"
    return rows


def rejected_rows(lake: Path, day: date) -> pa.Table:
    return raw_rows(lake, day, "rejected/ratings").sort_by([("partition", "ascending"), ("offset", "ascending")])


def file_digests(lake: Path, dataset: str, day: date) -> dict[str, str]:
    """The digest of each file the log names for the day, by file name (attempt folders differ between runs)."""
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in live_files(lake / dataset, day)}


def attempt_folders(lake: Path, dataset: str, day: date) -> list[Path]:
    """The run folders inside the day's folder of the table, committed or not."""
    return sorted(path for path in partition_path(lake, dataset, day).iterdir() if path.is_dir())


@pytest.fixture
def three_days(kafka_broker):
    """A 2-partition topic with 20 events on each of the days around MIDDLE, in time order."""
    topic = new_topic(kafka_broker.bootstrap, partitions=2)
    per_day: dict[date, set[str]] = {}
    records = []
    for day_index, day_start in enumerate([MIDDLE - DAY, MIDDLE, MIDDLE + DAY]):
        for n in range(20):
            at = day_start + n * (DAY / 20) + timedelta(minutes=7)
            event_id = f"d{day_index}-{n}"
            per_day.setdefault(day_start.date(), set()).add(event_id)
            records.append((n % 2, at, str(n).encode(), event(event_id, at, user=n, item=100 + n)))
    produce(kafka_broker.bootstrap, topic, records)
    return topic, per_day


def test_backfill_of_a_middle_day_reads_exactly_its_slice(kafka_broker, lake, three_days):
    topic, per_day = three_days
    result = ingest(kafka_broker, topic, lake, MIDDLE)

    rows = raw_rows(lake, MIDDLE.date())
    assert rows.schema.remove_metadata() == EXPECTED_COLUMNS
    assert set(rows["event_id"].to_pylist()) == per_day[MIDDLE.date()]
    assert rows.num_rows == result.read == result.written == 20
    assert all(MIDDLE <= ts < MIDDLE + DAY for ts in rows["ts"].to_pylist())
    assert sorted(rows["user_id"].to_pylist(), key=int) == [str(n) for n in range(20)]  # ints → decimal strings

    manifest = read_manifest(lake, "raw/ratings", MIDDLE.date())
    assert manifest["counts"] == {"read": 20, "written": 20, "rejected": 0, "rejected_by_reason": {}}
    assert [(p["partition"], p["start_offset"], p["end_offset"]) for p in manifest["partitions"]] == [
        (0, 10, 20), (1, 10, 20)]
    assert manifest["topic"] == topic and manifest["schema_version"] == RATINGS_SCHEMA.version
    assert manifest["interval"] == {"start": MIDDLE.isoformat(), "end": (MIDDLE + DAY).isoformat()}

    ingest(kafka_broker, topic, lake, MIDDLE - DAY)
    ingest(kafka_broker, topic, lake, MIDDLE + DAY)
    everything = pa.concat_tables(raw_rows(lake, day) for day in per_day)
    assert everything.num_rows == 60
    assert set(everything["event_id"].to_pylist()) == set().union(*per_day.values())


def test_rerun_rewrites_byte_identical_partitions(kafka_broker, lake):
    topic = new_topic(kafka_broker.bootstrap, partitions=2)
    records = [(n % 2, MIDDLE + n * HOUR, b"k", event(f"e{n}", MIDDLE + n * HOUR, user=n)) for n in range(20)]
    records.insert(5, (1, MIDDLE + 5 * HOUR, b"k", b"{not json"))
    produce(kafka_broker.bootstrap, topic, records)
    ingest(kafka_broker, topic, lake, MIDDLE)
    first = file_digests(lake, "raw/ratings", MIDDLE.date()), file_digests(lake, "rejected/ratings", MIDDLE.date())
    first_files = live_files(lake / "raw/ratings", MIDDLE.date())

    ingest(kafka_broker, topic, lake, MIDDLE)

    assert (file_digests(lake, "raw/ratings", MIDDLE.date()),
            file_digests(lake, "rejected/ratings", MIDDLE.date())) == first
    assert raw_rows(lake, MIDDLE.date()).num_rows == 20
    assert rejected_rows(lake, MIDDLE.date()).num_rows == 1
    rerun_files = live_files(lake / "raw/ratings", MIDDLE.date())
    assert not set(first_files) & set(rerun_files)  # the rerun's commit replaced the first run's files
    assert len(attempt_folders(lake, "raw/ratings", MIDDLE.date())) == 2  # the first run's stay until VACUUM


CRASHING_CHILD = """
import json, os, signal, sys
from datetime import datetime
import lakeloop.delta
from lakeloop.ingest.interval import ingest_interval
from lakeloop.ingest.options import IngestOptions

bootstrap, topic, lake, start, end, kill_at_commit = json.loads(sys.argv[1])
commits = []
real_commit = lakeloop.delta.commit_partition_files

def commit_or_die(lake, dataset, day, files, summary):
    commits.append(dataset)
    if len(commits) == kill_at_commit:
        os.kill(os.getpid(), signal.SIGKILL)  # the data is fully written in the table's folder; no commit names it
    return real_commit(lake, dataset, day, files, summary)

lakeloop.delta.commit_partition_files = commit_or_die
ingest_interval({"bootstrap_servers": bootstrap}, topic, lake, datetime.fromisoformat(start),
                datetime.fromisoformat(end), options=IngestOptions(chunk_size=7, row_group_size=10))
"""


def run_crashing_ingest(broker, topic: str, lake: Path | str, start: datetime, kill_at_commit: int) -> None:
    args = json.dumps([broker.bootstrap, topic, str(lake), start.isoformat(), (start + DAY).isoformat(),
                       kill_at_commit])
    child = subprocess.run([sys.executable, "-c", CRASHING_CHILD, args], capture_output=True, text=True, timeout=120)
    assert child.returncode == -9, child.stderr[-3000:]


@pytest.mark.parametrize("kill_at_commit", [1, 2], ids=["before-any-commit", "after-rejects-commit"])
def test_crash_between_write_and_commit_leaves_the_previous_partition(kafka_broker, lake, three_days,
                                                                      kill_at_commit):
    topic, per_day = three_days
    last_day = MIDDLE + DAY  # the newest interval: a record stamped inside it and appended later belongs to it
    ingest(kafka_broker, topic, lake, last_day)
    before = file_digests(lake, "raw/ratings", last_day.date())
    produce(kafka_broker.bootstrap, topic, [(1, last_day + 2 * HOUR, b"1", event("late-arrival", last_day))])

    run_crashing_ingest(kafka_broker, topic, lake, last_day, kill_at_commit)

    assert file_digests(lake, "raw/ratings", last_day.date()) == before
    assert set(raw_rows(lake, last_day.date())["event_id"].to_pylist()) == per_day[last_day.date()]
    committed = {path.parent for path in live_files(lake / "raw/ratings", last_day.date())}
    killed = [folder for folder in attempt_folders(lake, "raw/ratings", last_day.date()) if folder not in committed]
    assert len(killed) == 1 and list(killed[0].glob("*.parquet"))  # the killed run's files, named by no commit

    result = ingest(kafka_broker, topic, lake, last_day)
    assert result.written == 21 and "late-arrival" in raw_rows(lake, last_day.date())["event_id"].to_pylist()


def test_crash_on_the_first_run_leaves_no_partition(kafka_broker, lake, three_days):
    topic, _ = three_days
    run_crashing_ingest(kafka_broker, topic, lake, MIDDLE, kill_at_commit=1)
    assert list(partition_path(lake, "raw/ratings", MIDDLE.date()).rglob("*.parquet"))  # written, never committed
    assert read_day(lake / "raw/ratings", MIDDLE.date()) is None
    assert read_day(lake / "rejected/ratings", MIDDLE.date()) is None
    assert not (lake / "raw/ratings/_delta_log").exists()


def test_each_malformed_kind_is_rejected_with_its_reason_and_counts_reconcile(kafka_broker, lake):
    topic = new_topic(kafka_broker.bootstrap, partitions=2)
    at = MIDDLE + 6 * HOUR
    good = [(n % 2, at, str(n).encode(), event(f"good-{n}", at, user=n if n % 3 else f"u{n}")) for n in range(30)]
    bad = [(n % 2, at + timedelta(seconds=n), b"bad", value if value is None or b"%d" not in value else
            value % ms(at)) for n, value in enumerate(MALFORMED)]
    records = [record for pair in zip_longest(good, bad) for record in pair if record]
    offsets = produce(kafka_broker.bootstrap, topic, records)
    sent = {(partition, offset): value for (partition, _, _, value), offset in zip(records, offsets, strict=True)}

    result = ingest(kafka_broker, topic, lake, MIDDLE,
                    options=IngestOptions(chunk_size=8, row_group_size=10, max_rejected_fraction=1.0))

    rejected = rejected_rows(lake, MIDDLE.date())
    assert rejected.schema.remove_metadata() == REJECTED_SCHEMA
    by_value = {}
    for row in rejected.to_pylist():
        assert row["topic"] == topic and row["key"] == b"bad"
        value = sent[(row["partition"], row["offset"])]
        if row["reason"] == "oversize":
            assert row["value"] == value[:OVERSIZE_VALUE_HEAD_BYTES]
        else:
            assert row["value"] == value  # the raw bytes, untouched
        by_value[value] = (row["reason"], row["detail"])
    expected = {value if value is None or b"%d" not in value else value % ms(at): reason
                for value, reason in MALFORMED.items()}
    assert set(by_value) == set(expected)
    for value, (reason, detail_part) in expected.items():
        assert by_value[value][0] == reason, value
        assert detail_part in by_value[value][1], (value, by_value[value])

    written = raw_rows(lake, MIDDLE.date())
    assert sorted(written["event_id"].to_pylist()) == sorted(f"good-{n}" for n in range(30))
    assert result.read == len(records) == result.written + result.rejected
    manifest = read_manifest(lake, "raw/ratings", MIDDLE.date())
    assert manifest["counts"]["read"] == manifest["counts"]["written"] + manifest["counts"]["rejected"]
    assert sum(manifest["counts"]["rejected_by_reason"].values()) == rejected.num_rows == len(MALFORMED)
    for piece in manifest["partitions"]:
        assert piece["read"] == piece["written"] + piece["rejected"] == piece["end_offset"] - piece["start_offset"]
    assert read_manifest(lake, "rejected/ratings", MIDDLE.date())["counts"] == manifest["counts"]


def test_rejection_rate_above_the_threshold_fails_loudly_and_keeps_the_data_partition(kafka_broker, lake):
    topic = new_topic(kafka_broker.bootstrap, partitions=1)
    at = MIDDLE + HOUR
    produce(kafka_broker.bootstrap, topic, [(0, at, b"1", event(f"e{n}", at)) for n in range(20)]
            + [(0, at, b"1", b'{"schema": "v2"}'), (0, at, b"1", b'{"schema": "v2"}')])
    ingest(kafka_broker, topic, lake, MIDDLE, options=IngestOptions(max_rejected_fraction=0.5))
    before = file_digests(lake, "raw/ratings", MIDDLE.date())
    rejected_version = partition_summary(Lake.from_url(str(lake)), "rejected/ratings", MIDDLE.date())["table_version"]

    with pytest.raises(RejectionRateExceeded, match=r"2 of 22 records \(9\.1%\).*threshold of 5\.0%.*missing_field=2"):
        ingest(kafka_broker, topic, lake, MIDDLE)

    assert file_digests(lake, "raw/ratings", MIDDLE.date()) == before
    assert len(attempt_folders(lake, "raw/ratings", MIDDLE.date())) == 1  # the refused run's files are deleted
    assert rejected_rows(lake, MIDDLE.date())["reason"].to_pylist() == ["missing_field", "missing_field"]
    assert partition_summary(Lake.from_url(str(lake)), "rejected/ratings",
                             MIDDLE.date())["table_version"] == rejected_version + 1  # the rejects were published


def test_event_time_policy_for_late_and_early_events(kafka_broker, lake):
    topic = new_topic(kafka_broker.bootstrap, partitions=1)
    records = [  # (record timestamp, event time) in log order
        ("on-time", MIDDLE + HOUR, MIDDLE + HOUR),
        ("late-within-3-days", MIDDLE + 2 * HOUR, MIDDLE - 2 * DAY),
        ("late-beyond", MIDDLE + 3 * HOUR, MIDDLE - 3 * DAY - HOUR),
        ("early-within-1-hour", MIDDLE + 4 * HOUR, MIDDLE + DAY + 30 * timedelta(minutes=1)),
        ("early-beyond", MIDDLE + 5 * HOUR, MIDDLE + DAY + 2 * HOUR),
        # stamped by its producer an hour before MIDDLE but appended after MIDDLE's records: it arrived on MIDDLE
        ("out-of-order-arrival", MIDDLE - HOUR, MIDDLE - HOUR),
        ("on-time-2", MIDDLE + 6 * HOUR, MIDDLE + 6 * HOUR),
        ("next-day", MIDDLE + DAY + HOUR, MIDDLE + DAY + HOUR),
    ]
    produce(kafka_broker.bootstrap, topic, [(0, stamp, b"1", event(name, ts)) for name, stamp, ts in records])

    tolerant = IngestOptions(max_rejected_fraction=1.0)  # allowed_lateness=3 days, allowed_earliness=1 hour
    before = ingest(kafka_broker, topic, lake, MIDDLE - DAY, options=tolerant)
    middle = ingest(kafka_broker, topic, lake, MIDDLE, options=tolerant)
    after = ingest(kafka_broker, topic, lake, MIDDLE + DAY, options=tolerant)

    assert before.read == 0 and after.read == 1
    assert sorted(raw_rows(lake, MIDDLE.date())["event_id"].to_pylist()) == sorted(
        ["on-time", "late-within-3-days", "early-within-1-hour", "out-of-order-arrival", "on-time-2"])
    assert middle.rejected_by_reason == {"too_late": 1, "too_early": 1}
    reasons = {json.loads(row["value"])["event_id"]: row["reason"]
               for row in rejected_rows(lake, MIDDLE.date()).to_pylist()}
    assert reasons == {"late-beyond": "too_late", "early-beyond": "too_early"}
    assert before.read + middle.read + after.read == len(records)  # the slices tile the log


def test_duplicates_across_chunks_and_partitions_keep_the_first(kafka_broker, lake):
    topic = new_topic(kafka_broker.bootstrap, partitions=2)
    at = MIDDLE + HOUR
    records = [(0, at, b"a", event(f"e{n}", at, rating=1.0)) for n in range(12)]
    reordered_e8 = dict(reversed(json.loads(event("e8", at, rating=1.0)).items()), origin="retry")
    records += [(0, at, b"a", event("e3", at, rating=2.0)),  # offset 12: differs from offset 3, an earlier chunk
                (0, at, b"a", event("e7", at, rating=1.0)),  # 13: the same bytes as offset 7
                (0, at, b"a", json.dumps(reordered_e8).encode()),  # 14: same declared fields, other bytes
                (1, at, b"b", event("e5", at, rating=3.0)),  # partition 1, offset 0: differs from p0's e5
                (1, at, b"b", event("e100", at, rating=4.0)), (1, at, b"b", event("e100", at, rating=5.0)),
                (1, at, b"b", event("e100", at, rating=4.0))]  # 3: the same as offset 1, in the same chunk
    produce(kafka_broker.bootstrap, topic, records)

    result = ingest(kafka_broker, topic, lake, MIDDLE, options=IngestOptions(chunk_size=5, max_rejected_fraction=1.0))

    rows = raw_rows(lake, MIDDLE.date())
    assert sorted(rows["event_id"].to_pylist()) == sorted([f"e{n}" for n in range(12)] + ["e100"])
    assert set(rows.filter(pa.compute.equal(rows["event_id"], "e100"))["rating"].to_pylist()) == {4.0}
    assert result.rejected_by_reason == {"duplicate": 3, "duplicate_conflict": 3}
    assert result.read == result.written + result.rejected
    rejected = rejected_rows(lake, MIDDLE.date()).to_pylist()
    reasons = {(row["partition"], row["offset"]): row["reason"] for row in rejected}
    assert reasons == {(0, 12): "duplicate_conflict", (0, 13): "duplicate", (0, 14): "duplicate",
                       (1, 0): "duplicate_conflict", (1, 2): "duplicate_conflict", (1, 3): "duplicate"}
    details = {row["reason"]: row["detail"] for row in rejected}
    assert details["duplicate_conflict"] == ("event_id already written from this slice with different content; "
                                             "the first occurrence was kept")
    assert details["duplicate"] == "event_id already written from this slice"


def big_value(event_id: str, size: int) -> bytes:
    """A JSON event of exactly `size` bytes (an undeclared field pads it)."""
    head = b'{"event_id": "%s", "pad": "' % event_id.encode()
    return head + b"x" * (size - len(head) - 2) + b'"}'


def padded_event(event_id: str, at: datetime, pad_bytes: int, **fields) -> bytes:
    """A valid event made longer by an undeclared field of `pad_bytes` characters."""
    return json.dumps({**json.loads(event(event_id, at, **fields)), "pad": "p" * pad_bytes}).encode()


def test_oversized_values_are_rejected_as_they_are_read(kafka_broker, lake):
    topic = new_topic(kafka_broker.bootstrap, partitions=2, max_message_bytes=LARGEST_TEST_MESSAGE)
    at = MIDDLE + HOUR
    records = [(n % 2, at, b"k", event(f"e{n}", at, user=n)) for n in range(40)]
    for n in (3, 11, 12, 30):
        records.insert(n, (n % 2, at, b"big", big_value(f"big-{n}", 2 * 1024 * 1024)))
    offsets = produce(kafka_broker.bootstrap, topic, records)
    sent = {(partition, offset): value for (partition, _, _, value), offset in zip(records, offsets, strict=True)}

    result = ingest(kafka_broker, topic, lake, MIDDLE, options=IngestOptions(max_rejected_fraction=0.1))

    assert (result.read, result.written, result.rejected_by_reason) == (44, 40, {"oversize": 4})
    assert sorted(raw_rows(lake, MIDDLE.date())["event_id"].to_pylist()) == sorted(f"e{n}" for n in range(40))
    rejected = rejected_rows(lake, MIDDLE.date()).to_pylist()
    assert sorted((row["partition"], row["offset"]) for row in rejected) == sorted(
        key for key, value in sent.items() if len(value) > RATINGS_SCHEMA.max_value_bytes)
    for row in rejected:
        value = sent[(row["partition"], row["offset"])]
        assert (row["key"], row["reason"]) == (b"big", "oversize")
        assert row["detail"].startswith(f"value of {len(value)} bytes > {RATINGS_SCHEMA.max_value_bytes}")
        assert row["value"] == value[:OVERSIZE_VALUE_HEAD_BYTES]  # only a head of the payload is kept
    assert result.largest_chunk_bytes < 64 * 1024  # the 2 MB payloads were dropped before the chunks


def test_chunks_are_bounded_by_value_bytes_without_changing_the_output(kafka_broker, lake):
    topic = new_topic(kafka_broker.bootstrap, partitions=2)
    at = MIDDLE + HOUR
    records = [(n % 2, at, b"k", padded_event(f"e{n}", at, pad_bytes=n * 397 % 3000, user=n)) for n in range(80)]
    records += [(0, at, b"k", b"{not json"), (1, at, b"k", padded_event("e7", at, pad_bytes=10, rating=2.0)),
                (0, at, b"k", big_value("big", 20_000))]
    produce(kafka_broker.bootstrap, topic, records)
    budget = 4096

    small = ingest(kafka_broker, topic, lake, MIDDLE,
                   options=IngestOptions(chunk_bytes=budget, row_group_size=10, max_rejected_fraction=1.0))
    small_files = (file_digests(lake, "raw/ratings", MIDDLE.date()),
                   file_digests(lake, "rejected/ratings", MIDDLE.date()))
    large = ingest(kafka_broker, topic, lake, MIDDLE,
                   options=IngestOptions(row_group_size=10, max_rejected_fraction=1.0))

    assert (file_digests(lake, "raw/ratings", MIDDLE.date()),
            file_digests(lake, "rejected/ratings", MIDDLE.date())) == small_files
    assert (small.read, small.written, small.rejected_by_reason) == (
        large.read, large.written, large.rejected_by_reason) == (
        83, 80, {"invalid_json": 1, "duplicate_conflict": 1, "oversize": 1})
    assert large.chunks == 2 and budget < large.largest_chunk_bytes  # one chunk per partition
    assert small.largest_chunk_bytes <= budget < 2 * small.largest_chunk_bytes  # every value is < 3.2 KB
    assert small.chunks >= large.largest_chunk_bytes // budget
    with pytest.raises(ValueError, match="chunk_bytes=0 must be at least 1"):
        IngestOptions(chunk_bytes=0)


def test_an_empty_interval_writes_an_empty_readable_partition(kafka_broker, lake):
    topic = new_topic(kafka_broker.bootstrap, partitions=2)
    result = ingest(kafka_broker, topic, lake, MIDDLE)
    assert (result.read, result.written, result.rejected) == (0, 0, 0)
    assert raw_rows(lake, MIDDLE.date()).schema.remove_metadata() == EXPECTED_COLUMNS
    assert raw_rows(lake, MIDDLE.date()).num_rows == 0
    assert read_manifest(lake, "raw/ratings", MIDDLE.date())["counts"]["read"] == 0
    assert rejected_rows(lake, MIDDLE.date()).num_rows == 0  # the rejected table has the day too, an empty file
    assert read_manifest(lake, "rejected/ratings", MIDDLE.date())["counts"]["rejected"] == 0


def test_progress_offsets_are_committed_for_lag_tools_and_never_move_back(kafka_broker, lake, three_days):
    topic, _ = three_days
    ingest(kafka_broker, topic, lake, MIDDLE + DAY)
    ingest(kafka_broker, topic, lake, MIDDLE - DAY)  # a backfill of an older day
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap, group_id=COMMIT_GROUP_ID,
                             enable_auto_commit=False)
    try:
        committed = [consumer.committed(TopicPartition(topic, partition)) for partition in (0, 1)]
    finally:
        consumer.close(autocommit=False)
    assert committed == [30, 30]


def test_unreachable_broker_fails_clearly_after_bounded_retries(lake, caplog):
    address = f"127.0.0.1:{free_port()}"
    options = IngestOptions(connect_attempts=2, connect_backoff_s=0.1, bootstrap_timeout_ms=300)
    with caplog.at_level(logging.WARNING, logger="lakeloop.ingest"):
        with pytest.raises(KafkaUnavailableError, match=rf"unreachable at {address} after 2 attempts"):
            ingest_interval({"bootstrap_servers": address}, "ratings", lake, MIDDLE, MIDDLE + DAY, options=options)
    attempts = [record.message for record in caplog.records if record.name.startswith("lakeloop.ingest")]
    assert len(attempts) == 2
    assert attempts[0].startswith(f"Kafka at {address} not reachable (attempt 1/2)")
    assert attempts[1].startswith(f"Kafka at {address} not reachable (attempt 2/2)")
    assert not partition_path(lake, "raw/ratings", MIDDLE.date()).exists()


def test_a_missing_topic_is_a_clear_error(kafka_broker, lake):
    with pytest.raises(KafkaSliceError, match="topic 'no-such-topic' does not exist"):
        ingest(kafka_broker, "no-such-topic", lake, MIDDLE)


def test_kcat_as_an_independent_producer(kafka_broker, lake):
    kcat = shutil.which("kcat")
    assert kcat, "kcat is missing: run scripts/install-system-packages.sh"
    topic = new_topic(kafka_broker.bootstrap, partitions=3)
    now = datetime.now(UTC)
    lines = [f"{n}\t" + json.dumps({"event_id": f"kcat-{n}", "user_id": n, "item_id": f"movie-{n}",
                                   "rating": 0.5 + (n % 10) / 2, "ts": ms(now)}) for n in range(50)]
    lines.append("7\tnot json at all")
    subprocess.run([kcat, "-P", "-b", kafka_broker.bootstrap, "-t", topic, "-K", "\t"],
                   input="\n".join(lines) + "\n", text=True, check=True, timeout=60)

    start = now - HOUR
    result = ingest_interval({"bootstrap_servers": kafka_broker.bootstrap}, topic, lake, start, start + 2 * HOUR,
                             options=IngestOptions(max_rejected_fraction=0.1))

    rows = raw_rows(lake, start.date())
    assert sorted(rows["event_id"].to_pylist()) == sorted(f"kcat-{n}" for n in range(50))
    assert (result.read, result.written, result.rejected_by_reason) == (51, 50, {"invalid_json": 1})
    assert len([piece for piece in result.slices if piece.size]) > 1  # keys spread over partitions


def test_a_lake_that_cannot_be_written_is_a_clear_error(kafka_broker, tmp_path, three_days):
    topic, _ = three_days
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    with pytest.raises(LakeWriteError, match="cannot write the lake at file://.*/file/lake: .*Not a directory"):
        ingest(kafka_broker, topic, not_a_directory / "lake", MIDDLE)
    assert not [child for child in psutil.Process().children(recursive=True)  # the reading process was reaped
                if "lakeloop.ingest.reader_process" in child.cmdline()]


def test_a_declared_schema_describes_any_json_topic(kafka_broker, lake):
    clicks = RecordSchema(name="clicks", version=3, fields=(
        FieldSpec("click_id", FieldKind.STRING), FieldSpec("page", FieldKind.ID),
        FieldSpec("position", FieldKind.INTEGER, minimum=1), FieldSpec("at", FieldKind.EPOCH_MILLIS),
        FieldSpec("referrer", FieldKind.STRING, required=False)), id_field="click_id", event_time_field="at")
    topic = new_topic(kafka_broker.bootstrap, partitions=1)
    at = MIDDLE + HOUR
    values = [{"click_id": "c1", "page": 7, "position": 1, "at": ms(at)},
              {"click_id": "c2", "page": "home", "position": 3, "at": ms(at), "referrer": "mail"},
              {"click_id": "c3", "page": 7, "position": 0, "at": ms(at)}]
    produce(kafka_broker.bootstrap, topic, [(0, at, None, json.dumps(value).encode()) for value in values])

    result = ingest(kafka_broker, topic, lake, MIDDLE, schema=clicks, dataset="raw/clicks",
                    rejected_dataset="rejected/clicks", options=IngestOptions(max_rejected_fraction=0.5))

    rows = raw_rows(lake, MIDDLE.date(), "raw/clicks")
    assert rows.schema.remove_metadata() == pa.schema([
        ("click_id", pa.string()), ("page", pa.string()), ("position", pa.int64()),
        ("at", pa.timestamp("ms", tz="UTC")), ("referrer", pa.string())])
    assert rows.to_pylist()[1] == {"click_id": "c2", "page": "home", "position": 3, "at": at, "referrer": "mail"}
    assert result.rejected_by_reason == {"out_of_range": 1}
    assert read_manifest(lake, "raw/clicks", MIDDLE.date())["schema"]["version"] == 3
    with pytest.raises(ValueError, match="event_time_field"):
        RecordSchema(name="bad", version=1, fields=(FieldSpec("t", FieldKind.INTEGER),), event_time_field="t")


def test_a_run_of_another_schema_is_refused_and_leaves_the_day_and_no_files(kafka_broker, lake):
    topic = new_topic(kafka_broker.bootstrap, partitions=1)
    at = MIDDLE + HOUR
    produce(kafka_broker.bootstrap, topic, [(0, at, b"1", event("e1", at))])
    ingest(kafka_broker, topic, lake, MIDDLE)
    before = raw_rows(lake, MIDDLE.date())
    wider = dataclasses.replace(RATINGS_SCHEMA, version=RATINGS_SCHEMA.version + 1, fields=(
        *RATINGS_SCHEMA.fields, FieldSpec("device", FieldKind.STRING, required=False)))

    with pytest.raises(ValueError, match=rf"raw/ratings of {MIDDLE.date()} could not be committed .*its schema is "
                                         r"event_id string, user_id string.*the files' is .*device string.*"
                                         r"changed nothing"):
        ingest(kafka_broker, topic, lake, MIDDLE, schema=wider)

    assert raw_rows(lake, MIDDLE.date()).equals(before)
    assert len(attempt_folders(lake, "raw/ratings", MIDDLE.date())) == 1  # the refused run's files are deleted


def test_days_committed_by_manifest_before_become_days_of_the_delta_table(kafka_broker, lake, three_days):
    from lakeloop.delta_maintenance import maintain_table

    topic, per_day = three_days
    earlier, at = (MIDDLE - DAY).date(), MIDDLE - DAY + HOUR
    old_rows = pa.table({"event_id": ["old-1"], "user_id": ["1"], "item_id": ["2"], "rating": [4.0],
                         "ts": pa.array([ms(at)], pa.int64()).cast(pa.timestamp("ms", tz="UTC"))},
                        schema=EXPECTED_COLUMNS)
    by_manifest = Lake.from_url(str(lake))  # how ingestion committed a day before raw became a Delta table
    write_manifest_day(by_manifest, "raw/ratings", earlier, old_rows,
                       {"counts": {"read": 1, "written": 1, "rejected": 0}})

    ingest(kafka_broker, topic, lake, MIDDLE)
    maintain_table(by_manifest, "raw/ratings", retention_hours=0, force_short_retention=True)

    assert raw_rows(lake, earlier).equals(old_rows)  # read through the log, and kept by VACUUM
    assert read_manifest(lake, "raw/ratings", earlier)["counts"] == {"read": 1, "written": 1, "rejected": 0}
    assert set(raw_rows(lake, MIDDLE.date())["event_id"].to_pylist()) == per_day[MIDDLE.date()]


def test_read_manifest_names_the_missing_partition(lake):
    with pytest.raises(FileNotFoundError, match="no commit of 2026-01-02 in the Delta table .*raw/ratings: "
                                                "raw/ratings has no ingested partition for 2026-01-02"):
        read_manifest(lake, "raw/ratings", date(2026, 1, 2))



def s3_digests(lake: Lake, dataset: str, day: date) -> dict[str, str]:
    digests = {}
    for path in partition_files(lake, dataset, day):
        with lake.filesystem.open_input_stream(path) as stream:
            digests[path.rsplit("/", 1)[-1]] = hashlib.sha256(stream.read()).hexdigest()
    return digests


def test_ingest_into_an_s3_lake_is_exact_and_idempotent(kafka_broker, s3_lake, three_days):
    topic, per_day = three_days
    result = ingest(kafka_broker, topic, s3_lake, MIDDLE)
    assert result.path == f"{s3_lake.url}/raw/ratings/dt={MIDDLE.date()}"

    rows = read_partition(s3_lake, "raw/ratings", MIDDLE.date())
    assert set(rows["event_id"].to_pylist()) == per_day[MIDDLE.date()]
    assert rows.num_rows == result.written == 20
    assert read_manifest(s3_lake.url, "raw/ratings", MIDDLE.date())["counts"]["written"] == 20
    first = s3_digests(s3_lake, "raw/ratings", MIDDLE.date()), s3_digests(s3_lake, "rejected/ratings", MIDDLE.date())

    ingest(kafka_broker, topic, s3_lake, MIDDLE)

    assert (s3_digests(s3_lake, "raw/ratings", MIDDLE.date()),
            s3_digests(s3_lake, "rejected/ratings", MIDDLE.date())) == first
    partition = s3_lake.partition("raw/ratings", MIDDLE.date())
    listed = s3_lake.filesystem.get_file_info(pafs.FileSelector(partition, recursive=True))
    committed = partition_files(s3_lake, "raw/ratings", MIDDLE.date())
    assert len({path.rsplit("/", 1)[0] for path in committed}) == 1  # one run's files, the rerun's
    assert set(committed) < {info.path for info in listed if info.is_file}  # the first run's stay until VACUUM


def test_a_killed_s3_ingest_leaves_the_committed_partition(kafka_broker, s3_lake, three_days):
    topic, per_day = three_days
    last_day = MIDDLE + DAY
    ingest(kafka_broker, topic, s3_lake, last_day)
    before = s3_digests(s3_lake, "raw/ratings", last_day.date())
    late = last_day + HOUR
    produce(kafka_broker.bootstrap, topic, [(0, late, b"k", event("late-1", late))])

    run_crashing_ingest(kafka_broker, topic, s3_lake.url, last_day, kill_at_commit=1)

    partition = s3_lake.partition("raw/ratings", last_day.date())
    listed = s3_lake.filesystem.get_file_info(pafs.FileSelector(partition, recursive=True))
    assert len([info for info in listed if info.is_file and info.path.endswith(".parquet")]) > len(before), \
        "the killed run did upload its files"
    assert s3_digests(s3_lake, "raw/ratings", last_day.date()) == before
    committed = read_partition(s3_lake, "raw/ratings", last_day.date())
    assert set(committed["event_id"].to_pylist()) == per_day[last_day.date()]

    result = ingest(kafka_broker, topic, s3_lake, last_day)
    assert result.written == 21
    assert "late-1" in read_partition(s3_lake, "raw/ratings", last_day.date())["event_id"].to_pylist()
