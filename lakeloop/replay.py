"""Replay MovieLens into Kafka as a stream of rating events spread over recent days.

The data set's 7-month span is mapped, in order, onto the N days ending on `end_day`, so a fresh clone
has a few "yesterdays" of realistic traffic for the daily DAG. Each rating becomes one event with the
Kafka record timestamp equal to its (mapped) event time, keyed by user id.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lakeloop.ingest.kafka_config import normalize_client_options, security_options_from_env
from lakeloop.lake import Lake, as_lake
from lakeloop.movielens import MovieLens
from lakeloop.names import MOVIES
from tfspark.storage import RemoteDirectory

log = logging.getLogger(__name__)
DAY_MS = 86_400_000
MOVIES_FILE = "movies.parquet"


@dataclass(frozen=True)
class ReplayReport:
    """What a replay published: events per replayed day, and where the catalog went."""

    topic: str
    events_per_day: dict[str, int]
    catalog_url: str
    published: bool = True

    @property
    def total(self) -> int:
        """All events published."""
        return sum(self.events_per_day.values())


def map_event_times(timestamps_s: pa.Array, days: int, end_day: date) -> pa.Array:
    """Map epoch-second timestamps, in order, onto [end_day - days + 1, end_day + 1) as epoch ms."""
    first = pc.min(timestamps_s).as_py()
    span = pc.max(timestamps_s).as_py() - first + 1
    start_ms = int(datetime.combine(end_day - timedelta(days=days - 1), datetime.min.time(), UTC)
                   .timestamp() * 1000)
    offsets = pc.divide(pc.multiply(pc.subtract(pc.cast(timestamps_s, pa.float64()), first), days * DAY_MS),
                        float(span))
    return pc.add(pc.cast(pc.floor(offsets), pa.int64()), start_ms)


def build_events(movielens: MovieLens, days: int, end_day: date) -> pa.Table:
    """One event per rating: event_id, user_id (int), item_id (int), rating, ts (epoch ms), sorted by ts."""
    ratings = movielens.ratings
    event_ts = map_event_times(ratings["timestamp"].combine_chunks(), days, end_day)
    events = pa.table({
        "event_id": pc.binary_join_element_wise("ml100k", ratings["user_id"], ratings["item_id"], "-"),
        "user_id": pc.cast(ratings["user_id"], pa.int64()),
        "item_id": pc.cast(ratings["item_id"], pa.int64()),
        "rating": ratings["rating"],
        "ts": event_ts,
    })
    return events.sort_by([("ts", "ascending"), ("event_id", "ascending")])


def write_catalog(movielens: MovieLens, lake: Lake | Path | str) -> str:
    """Write the movie catalog, a reference dataset read whole (`lakeloop.spark_jobs.read_catalog`), as the one file
    `<lake>/reference/movies/movies.parquet`; return the dataset's URL.

    The file is replaced atomically, so readers see the old catalog or the new one: one PUT on an object store,
    written aside (a hidden name readers skip) and renamed over on local disk.
    """
    lake = as_lake(lake)
    path = lake.path(MOVIES)
    buffer = pa.BufferOutputStream()
    pq.write_table(movielens.movies, buffer)
    RemoteDirectory(lake.uri(path), lake.filesystem, path).write_bytes(MOVIES_FILE, buffer.getvalue().to_pybytes())
    return lake.uri(path)


def kafka_options(bootstrap: str, security: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """kafka-python options of the replay's clients: `bootstrap` plus the security settings `security` (any
    spelling `normalize_client_options` takes; default: the environment's, as ingestion reads them)."""
    security = security_options_from_env() if security is None else security
    return normalize_client_options({**security, "bootstrap_servers": bootstrap, "client_id": "lakeloop-replay"})


def ensure_topic(bootstrap: str, topic: str, partitions: int = 3, security: Mapping[str, Any] | None = None) -> None:
    """Create `topic` with `partitions` partitions unless it exists, keeping records forever.

    Replayed events carry past timestamps; with a time-based retention the broker would delete them
    before the DAG could backfill those days. `security`: see `kafka_options`.
    """
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(**kafka_options(bootstrap, security))
    try:
        if topic not in admin.list_topics():
            admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1,
                                          topic_configs={"retention.ms": "-1"})])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()


def records_in_time_range(bootstrap: str, topic: str, start_ms: int, end_ms: int,
                          security: Mapping[str, Any] | None = None) -> int:
    """How many records of `topic` have a timestamp in [start_ms, end_ms) (0 if the topic is absent).
    `security`: see `kafka_options`."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**kafka_options(bootstrap, security), enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            return 0
        end_offsets = consumer.end_offsets(partitions)
        starts = consumer.offsets_for_times({tp: start_ms for tp in partitions})
        ends = consumer.offsets_for_times({tp: end_ms for tp in partitions})
        return sum((ends[tp].offset if ends[tp] else end_offsets[tp]) - (starts[tp].offset if starts[tp] else
                                                                         end_offsets[tp]) for tp in partitions)
    finally:
        consumer.close()


def publish_events(events: pa.Table, bootstrap: str, topic: str, security: Mapping[str, Any] | None = None) -> None:
    """Publish each event as UTF-8 JSON keyed by user id, with the record timestamp set to `ts`.
    `security`: see `kafka_options`."""
    from kafka import KafkaProducer

    producer = KafkaProducer(**kafka_options(bootstrap, security), linger_ms=20, batch_size=256 * 1024, acks="all")
    started = time.monotonic()
    rows = events.to_pylist()
    for index, event in enumerate(rows, start=1):
        producer.send(topic, key=str(event["user_id"]).encode(), timestamp_ms=event["ts"],
                      value=json.dumps(event, separators=(",", ":")).encode())
        if index % 20_000 == 0:
            log.info("published %d/%d events (%.0f/s)", index, len(rows), index / (time.monotonic() - started))
    producer.flush()
    producer.close()
    log.info("%d events published to %s and acknowledged (%.1f s)", len(rows), topic, time.monotonic() - started)


def replay(movielens: MovieLens, bootstrap: str, topic: str, lake: Lake | Path | str, days: int, end_day: date,
           force: bool = False, events: pa.Table | None = None,
           security: Mapping[str, Any] | None = None) -> ReplayReport:
    """Publish every rating to `topic` over the `days` days ending on `end_day`, and write the catalog.

    Replaying the same days twice would put every event in the topic twice (ingestion would reject the
    copies as duplicates), so a topic that already holds records in those days is left alone unless `force`.
    `events` (in `build_events`' layout, already timed) replaces MovieLens' own ratings, e.g. a re-sampled
    stream (`bench.e2e`); the catalog is still MovieLens'. `security` holds the Kafka security settings
    (default: the environment's `LAKELOOP_KAFKA_SECURITY_PROTOCOL`, `..._SASL_*`, `..._SSL_CAFILE`).
    """
    if days < 1:
        raise ValueError("days must be at least 1")
    security = security_options_from_env() if security is None else security
    if events is None:
        events = build_events(movielens, days, end_day)
    ensure_topic(bootstrap, topic, security=security)
    first_ms, last_ms = pc.min(events["ts"]).as_py(), pc.max(events["ts"]).as_py()
    present = records_in_time_range(bootstrap, topic, first_ms, last_ms + 1, security=security)
    if present and not force:
        log.warning("topic %r already holds %d records in the replayed days: not publishing again "
                    "(use --force to publish anyway)", topic, present)
    else:
        publish_events(events, bootstrap, topic, security=security)
    day_of = pc.cast(pc.cast(events["ts"], pa.timestamp("ms", tz="UTC")), pa.date32())
    counts = pc.value_counts(day_of)
    per_day = {str(item["values"]): item["counts"] for item in counts.to_pylist()}
    return ReplayReport(topic=topic, events_per_day=dict(sorted(per_day.items())),
                        catalog_url=write_catalog(movielens, lake), published=not present or force)
