"""KafkaToLakeOperator in a real DAG run (`dag.test()`), against the real embedded broker."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient

from lakeloop.delta import read_partition
from lakeloop.ingest.interval import read_manifest
from lakeloop.ingest.schema import RATINGS_SCHEMA
from lakeloop.lake import partition_path
from tests.delta_protocol import read_day

DAY = timedelta(days=1)
# Recent days: the embedded broker deletes records older than its retention (7 days by record timestamp).
RUN_DAY = datetime.combine(date.today() - timedelta(days=2), datetime.min.time(), UTC)


def publish_days(bootstrap: str, per_day: dict[datetime, int], bad_on: datetime | None = None) -> str:
    """A fresh topic holding `per_day[d]` rating events stamped inside each day d (plus 3 bad ones on `bad_on`)."""
    topic = f"operator-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics({topic: {"num_partitions": 2, "replication_factor": 1}}, wait_for_metadata=True)
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for day_start, count in sorted(per_day.items()):
        for n in range(count):
            at = day_start + timedelta(minutes=10 * n + 1)
            value = {"event_id": f"{day_start.date()}-{n}", "user_id": n, "item_id": 7, "rating": 3.0,
                     "ts": int(at.timestamp() * 1000)}
            producer.send(topic, key=str(n).encode(), value=json.dumps(value).encode(),
                          timestamp_ms=int(at.timestamp() * 1000))
        if day_start == bad_on:
            for _ in range(3):
                producer.send(topic, key=b"x", value=b'{"user_id": "schema v2"}',
                              timestamp_ms=int((day_start + DAY / 2).timestamp() * 1000))
    producer.flush()
    producer.close()
    return topic


def ingest_dag(topic: str, lake_url: str, kafka_conn_id: str | None):
    """A one-task DAG on the project's daily timetable, with templated topic and dataset names."""
    from airflow.sdk import DAG

    from lakeloop.timetable import DailyIntervalTimetable
    from operators.kafka_to_lake import KafkaToLakeOperator

    with DAG(dag_id=f"ingest_{uuid.uuid4().hex[:8]}", schedule=DailyIntervalTimetable(),
             start_date=datetime(2026, 1, 1, tzinfo=UTC), catchup=False,
             params={"topic": topic, "name": "ratings"},
             default_args={"owner": "lakeloop", "retries": 2}) as dag:
        KafkaToLakeOperator(
            task_id="ingest_ratings",
            topic="{{ params.topic }}",
            lake_url=lake_url,
            dataset="raw/{{ params.name }}",
            rejected_dataset="rejected/{{ params.name }}",
            schema=RATINGS_SCHEMA,
            kafka_conn_id=kafka_conn_id,
        )
    return dag


def run_dag_test(dag, logical_date: datetime):
    """`dag.test()` for a DAG defined in a test: register its serialized form first (it lives in no DAG file)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    with create_session() as session:
        DagBundlesManager().sync_bundles_to_db(session=session)
        session.commit()
        update_dag_parsing_results_in_db("dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(),
                                         session=session)
    return dag.test(logical_date=logical_date)


def returned_counts(dag_run) -> dict:
    """The XCom return value of `ingest_ratings` in a finished DAG run, read from the metadata database."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(XComModel).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id,
                                                 task_id="ingest_ratings", key="return_value").one()
        return json.loads(row.value) if isinstance(row.value, str) else row.value


def test_dag_run_ingests_its_data_interval_from_the_environment_bootstrap(airflow_db, kafka_broker, lake,
                                                                         monkeypatch):
    monkeypatch.setenv("LAKELOOP_KAFKA_BOOTSTRAP", kafka_broker.bootstrap)
    topic = publish_days(kafka_broker.bootstrap, {RUN_DAY - DAY: 5, RUN_DAY: 12, RUN_DAY + DAY: 4})

    dag_run = run_dag_test(ingest_dag(topic, lake.as_uri(), kafka_conn_id=None), RUN_DAY)

    assert dag_run.state == "success"
    rows = read_day(lake / "raw" / "ratings", RUN_DAY.date())
    assert sorted(rows["event_id"].to_pylist()) == sorted(f"{RUN_DAY.date()}-{n}" for n in range(12))
    assert sorted(path.name for path in (lake / "raw" / "ratings").iterdir()) == ["_delta_log", f"dt={RUN_DAY.date()}"]
    manifest = read_manifest(lake, "raw/ratings", RUN_DAY.date())
    assert manifest["topic"] == topic
    assert manifest["interval"] == {"start": RUN_DAY.isoformat(), "end": (RUN_DAY + DAY).isoformat()}
    assert returned_counts(dag_run) == {"day": str(RUN_DAY.date()), "topic": topic, "read": 12, "written": 12,
                                        "rejected": 0, "rejected_by_reason": {}}


def test_dag_run_reads_brokers_and_security_from_an_airflow_connection(airflow_db, kafka_broker, lake, monkeypatch):
    monkeypatch.setenv("LAKELOOP_KAFKA_BOOTSTRAP", "127.0.0.1:1")  # must not be used
    host, port = kafka_broker.bootstrap.split(":")
    monkeypatch.setenv("AIRFLOW_CONN_LAKELOOP_TEST_KAFKA", json.dumps({
        "conn_type": "kafka", "host": host, "port": int(port),
        "extra": {"security.protocol": "PLAINTEXT", "client.id": "lakeloop-operator-test"}}))
    topic = publish_days(kafka_broker.bootstrap, {RUN_DAY: 6})

    dag_run = run_dag_test(ingest_dag(topic, lake.as_uri(), kafka_conn_id="lakeloop_test_kafka"), RUN_DAY)

    assert dag_run.state == "success"
    assert read_manifest(lake, "raw/ratings", RUN_DAY.date())["counts"]["written"] == 6


def test_dag_run_ingests_into_an_s3_lake(airflow_db, kafka_broker, s3_lake, monkeypatch):
    monkeypatch.setenv("LAKELOOP_KAFKA_BOOTSTRAP", kafka_broker.bootstrap)
    topic = publish_days(kafka_broker.bootstrap, {RUN_DAY: 7}, bad_on=RUN_DAY - DAY)

    dag_run = run_dag_test(ingest_dag(topic, f"{s3_lake.url}/", kafka_conn_id=None), RUN_DAY)

    assert dag_run.state == "success"
    rows = read_partition(s3_lake, "raw/ratings", RUN_DAY.date())
    assert sorted(rows["event_id"].to_pylist()) == sorted(f"{RUN_DAY.date()}-{n}" for n in range(7))
    assert returned_counts(dag_run)["written"] == read_manifest(s3_lake, "raw/ratings", RUN_DAY.date())[
        "counts"]["written"] == 7


def test_a_rejection_rate_above_the_threshold_fails_the_task_without_retries(airflow_db, kafka_broker, lake,
                                                                             monkeypatch):
    monkeypatch.setenv("LAKELOOP_KAFKA_BOOTSTRAP", kafka_broker.bootstrap)
    topic = publish_days(kafka_broker.bootstrap, {RUN_DAY: 10}, bad_on=RUN_DAY)

    dag_run = run_dag_test(ingest_dag(topic, lake.as_uri(), kafka_conn_id=None), RUN_DAY)

    assert dag_run.state == "failed"
    (task_instance,) = dag_run.get_task_instances()
    assert (task_instance.state, task_instance.try_number) == ("failed", 1)
    assert read_day(lake / "raw" / "ratings", RUN_DAY.date()) is None
    assert not list(partition_path(lake, "raw/ratings", RUN_DAY.date()).rglob("*.parquet"))  # its files deleted
    rejected = read_day(lake / "rejected" / "ratings", RUN_DAY.date())
    assert rejected["reason"].to_pylist() == ["missing_field"] * 3


def test_connection_fields_become_kafka_client_options():
    from operators.hooks.kafka import client_config_from_connection

    assert client_config_from_connection(
        host="b1:9093,b2:9093", port=None, login="ingest", password="s3cret",
        extra={"security_protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "ssl.ca.location": "/ca.pem"},
    ) == {"bootstrap_servers": ["b1:9093", "b2:9093"], "security_protocol": "SASL_SSL",
          "sasl_mechanism": "SCRAM-SHA-512", "ssl_cafile": "/ca.pem", "sasl_plain_username": "ingest",
          "sasl_plain_password": "s3cret"}
    assert client_config_from_connection(host="broker", port=9092, login=None, password=None, extra={}) == {
        "bootstrap_servers": ["broker:9092"]}
    with pytest.raises(ValueError, match="neither a host nor extra bootstrap_servers"):
        client_config_from_connection(host=None, port=None, login=None, password=None, extra={}, conn_id="k")


def test_operator_declares_its_templated_fields():
    from operators.kafka_to_lake import KafkaToLakeOperator

    assert set(KafkaToLakeOperator.template_fields) == {"topic", "lake_url", "dataset", "rejected_dataset"}
