"""Rating events for the ingestion tests: one valid event, and one malformed value of each kind with its reason."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient

# Recent days: the broker deletes records older than its retention (7 days by record timestamp).
MIDDLE = datetime.combine(date.today() - timedelta(days=2), datetime.min.time(), UTC)


def ms(moment: datetime) -> int:
    """Epoch milliseconds, as events carry their time."""
    return int(moment.timestamp() * 1000)


def event(event_id: str, at: datetime, user: int | str = 1, item: int | str = 10, rating: float = 4.0) -> bytes:
    """One valid rating event as a Kafka value."""
    return json.dumps({"event_id": event_id, "user_id": user, "item_id": item, "rating": rating,
                       "ts": ms(at)}).encode()


MALFORMED = {
    b"\xff\xfe{}": ("invalid_utf8", "can't decode"),
    b'{"event_id": "m1", "user_id": 1,': ("invalid_json", "Expecting"),
    b"": ("invalid_json", "blank value"),
    None: ("invalid_json", "tombstone"),
    b'{"event_id": "m2", "user_id": 1, "user_id": 2, "item_id": 3, "rating": 4, "ts": %d}': ("invalid_json",
                                                                                              "duplicate key"),
    b"[1, 2, 3]": ("wrong_type", "expected a JSON object"),
    b'{"event_id": "m3", "user_id": 1.5, "item_id": 3, "rating": 4, "ts": %d}': ("wrong_type", "user_id"),
    b'{"event_id": "m4", "user_id": 1, "item_id": true, "rating": 4, "ts": %d}': ("wrong_type", "item_id"),
    b'{"event_id": "m5", "user_id": 1, "item_id": 3, "rating": "4.5", "ts": %d}': ("wrong_type", "rating"),
    b'{"event_id": "m6", "user_id": 1, "item_id": 3, "rating": 4, "ts": "yesterday"}': ("wrong_type", "ts"),
    b'{"event_id": "m7", "item_id": 3, "rating": 4, "ts": %d}': ("missing_field", "user_id"),
    b'{"event_id": "m8", "user_id": null, "item_id": 3, "rating": 4, "ts": %d}': ("missing_field", "user_id"),
    b'{"event_id": "", "user_id": 1, "item_id": 3, "rating": 4, "ts": %d}': ("missing_field", "event_id"),
    b'{"event_id": "m9", "user_id": 1, "item_id": 3, "rating": 5.5, "ts": %d}': ("out_of_range", "rating"),
    b'{"event_id": "m10", "user_id": 1, "item_id": 3, "rating": 0, "ts": %d}': ("out_of_range", "rating"),
    b'{"event_id": "m11", "user_id": 1, "item_id": 3, "rating": NaN, "ts": %d}': ("out_of_range", "rating"),
    b'{"event_id": "m12", "pad": "%s"}' % (b"x" * 20_000): ("oversize", "bytes"),
    b'{"event_id": "good-3", "user_id": 9, "item_id": 9, "rating": 1, "ts": %d}': ("duplicate_conflict",
                                                                                  "different content"),
    b'{"event_id": "good-4", "user_id": 4, "item_id": 10, "rating": 4.0, "ts": %d}': ("duplicate",
                                                                                     "already written"),
}


def topic_holding(bootstrap: str, partitions: int, records: list[tuple[int, bytes | None, bytes, int | None]]) -> str:
    """A new topic holding `records`, (partition, key, value, timestamp ms or None for now), sent in order."""
    topic = f"records-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics({topic: {"num_partitions": partitions, "replication_factor": 1}}, wait_for_metadata=True)
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for partition, key, value, timestamp_ms in records:
        producer.send(topic, partition=partition, key=key, value=value, timestamp_ms=timestamp_ms)
    producer.flush()
    producer.close()
    return topic
