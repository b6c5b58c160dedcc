"""Replaying MovieLens into a real broker: one event per rating, in order, over the requested days."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from kafka import KafkaConsumer, TopicPartition

from lakeloop.config import ConfigurationError
from lakeloop.movielens import MovieLens
from lakeloop.names import MOVIES
from lakeloop.replay import build_events, map_event_times, records_in_time_range, replay, write_catalog

END = date(2026, 11, 20)


def day_start_ms(day: date) -> int:
    return int(datetime.combine(day, datetime.min.time(), UTC).timestamp() * 1000)


def test_event_times_keep_order_and_fill_the_days(movielens):
    mapped = map_event_times(movielens.ratings["timestamp"].combine_chunks(), 3, END)
    order = pc.sort_indices(movielens.ratings["timestamp"])
    assert pc.all(pc.greater_equal(pc.subtract(pc.take(mapped, order)[1:], pc.take(mapped, order)[:-1]), 0)).as_py()
    assert pc.min(mapped).as_py() == day_start_ms(date(2026, 11, 18))
    assert pc.max(mapped).as_py() < day_start_ms(date(2026, 11, 21))


def test_replay_publishes_every_rating_with_record_time_equal_to_event_time(movielens, kafka_broker, lake):
    small = MovieLens(movielens.ratings.slice(0, 2000), movielens.movies)
    report = replay(small, kafka_broker.bootstrap, "replay-test", lake, days=2, end_day=END)
    assert report.total == 2000
    assert set(report.events_per_day) == {"2026-11-19", "2026-11-20"}

    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap, enable_auto_commit=False)
    partitions = [TopicPartition("replay-test", p) for p in consumer.partitions_for_topic("replay-test")]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    end_offsets = consumer.end_offsets(partitions)
    records = []
    while sum(consumer.position(tp) for tp in partitions) < sum(end_offsets.values()):
        for batch in consumer.poll(timeout_ms=2000).values():
            records.extend(batch)
    consumer.close()

    assert len(records) == 2000
    events = [json.loads(record.value) for record in records]
    assert all(record.timestamp == event["ts"] for record, event in zip(records, events, strict=True))
    assert all(record.key.decode() == str(event["user_id"]) for record, event in zip(records, events, strict=True))
    assert len({event["event_id"] for event in events}) == 2000
    expected = build_events(small, 2, END).to_pylist()
    assert sorted(events, key=lambda e: e["event_id"]) == sorted(expected, key=lambda e: e["event_id"])

    assert report.catalog_url == (lake / MOVIES).as_uri()
    catalog = pq.read_table(lake / MOVIES)
    assert catalog.num_rows == 1682
    assert catalog.column_names == ["item_id", "title", "year", "genres"]


def test_replaying_the_same_days_again_publishes_nothing(movielens, kafka_broker, lake):
    small = MovieLens(movielens.ratings.slice(0, 500), movielens.movies)
    assert replay(small, kafka_broker.bootstrap, "replay-twice", lake, days=1, end_day=END).published
    again = replay(small, kafka_broker.bootstrap, "replay-twice", lake, days=1, end_day=END)
    assert not again.published
    assert records_in_time_range(kafka_broker.bootstrap, "replay-twice", day_start_ms(END),
                                 day_start_ms(END) + 86_400_000) == 500
    forced = replay(small, kafka_broker.bootstrap, "replay-twice", lake, days=1, end_day=END, force=True)
    assert forced.published
    assert records_in_time_range(kafka_broker.bootstrap, "replay-twice", day_start_ms(END),
                                 day_start_ms(END) + 86_400_000) == 1000


def test_the_catalog_is_replaced_in_one_put_on_an_s3_lake(movielens, s3_lake):
    from pyarrow import fs as pafs

    assert write_catalog(MovieLens(movielens.ratings, movielens.movies.slice(0, 10)), s3_lake) == (
        f"{s3_lake.url}/{MOVIES}")
    url = write_catalog(movielens, s3_lake)

    listed = s3_lake.filesystem.get_file_info(pafs.FileSelector(s3_lake.path(MOVIES), recursive=True))
    assert [info.base_name for info in listed] == ["movies.parquet"]
    catalog = pq.read_table(url.removeprefix("s3://"), filesystem=s3_lake.filesystem)
    assert catalog.equals(movielens.movies)


class RecordingClient:
    """Stands in for kafka-python's admin client, consumer and producer, recording the options each was made with."""

    made: list[tuple[str, dict]] = []

    def __init__(self, **options):
        RecordingClient.made.append((type(self).__name__, options))

    def list_topics(self):
        return []

    def create_topics(self, topics):
        pass

    def partitions_for_topic(self, topic):
        return None

    def send(self, topic, **record):
        pass

    def flush(self):
        pass

    def close(self):
        pass


class Admin(RecordingClient):
    pass


class Consumer(RecordingClient):
    pass


class Producer(RecordingClient):
    pass


@pytest.fixture
def recording_clients(monkeypatch):
    import kafka
    import kafka.admin

    monkeypatch.setattr(kafka.admin, "KafkaAdminClient", Admin)
    monkeypatch.setattr(kafka, "KafkaConsumer", Consumer)
    monkeypatch.setattr(kafka, "KafkaProducer", Producer)
    RecordingClient.made = []
    return RecordingClient.made


def test_replay_gives_every_client_the_security_settings_of_the_environment(movielens, lake, recording_clients,
                                                                             monkeypatch):
    monkeypatch.setenv("LAKELOOP_KAFKA_SECURITY_PROTOCOL", "sasl_ssl")
    monkeypatch.setenv("LAKELOOP_KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("LAKELOOP_KAFKA_SASL_USERNAME", "replayer")
    monkeypatch.setenv("LAKELOOP_KAFKA_SASL_PASSWORD", "secret")
    monkeypatch.setenv("LAKELOOP_KAFKA_SSL_CAFILE", "/etc/kafka/ca.pem")
    replay(MovieLens(movielens.ratings.slice(0, 50), movielens.movies), "k1:9093,k2:9093", "ratings", lake,
           days=1, end_day=END)
    assert [name for name, _ in recording_clients] == ["Admin", "Consumer", "Producer"]
    for _, options in recording_clients:
        assert options["bootstrap_servers"] == ["k1:9093", "k2:9093"]
        assert {key: options[key] for key in ("security_protocol", "sasl_mechanism", "sasl_plain_username",
                                              "sasl_plain_password", "ssl_cafile")} == {
            "security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_plain_username": "replayer",
            "sasl_plain_password": "secret", "ssl_cafile": "/etc/kafka/ca.pem"}


def test_replay_takes_explicit_security_settings_and_refuses_a_misspelt_protocol(movielens, lake, recording_clients,
                                                                                 monkeypatch):
    monkeypatch.setenv("LAKELOOP_KAFKA_SECURITY_PROTOCOL", "SASL-SSL")  # not read: the settings are given
    small = MovieLens(movielens.ratings.slice(0, 50), movielens.movies)
    replay(small, "k1:9093", "ratings", lake, days=1, end_day=END, security={"security.protocol": "ssl"})
    assert [options["security_protocol"] for _, options in recording_clients] == ["SSL"] * 3
    with pytest.raises(ConfigurationError, match="^LAKELOOP_KAFKA_SECURITY_PROTOCOL='SASL-SSL': "):
        replay(small, "k1:9093", "ratings", lake, days=1, end_day=END)
