"""The embedded Apache Kafka broker: it starts, answers, bounds fetches, keeps its records across restarts, says
what is missing, and `lakeloop services` signals it only while its pid file names the broker itself."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient

from lakeloop.cli import main
from lakeloop.services import BrokerError, EmbeddedBroker, free_port, port_open

FETCH_BYTES = 64 * 1024


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The project state directory `lakeloop services` reads its pid file from."""
    monkeypatch.setenv("LAKELOOP_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("LAKELOOP_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")
    return tmp_path


@pytest.fixture
def unrelated_process():
    """A running process of its own session (as the broker's would be) that lakeloop did not start."""
    process = subprocess.Popen([sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(600)"],
                               stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert process.stdout.readline() == "ready\n"
    yield process
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.communicate()


def write_stale_pid_file(state_dir: Path, pid: int) -> Path:
    """A pid file left by a broker that died, whose pid the system has since given to another process."""
    pid_file = state_dir / "broker" / "broker.pid"
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text(f"{pid}\n")
    return pid_file


def test_services_down_leaves_a_process_that_reused_the_brokers_pid_alone(state_dir, unrelated_process, capsys,
                                                                            caplog):
    pid_file = write_stale_pid_file(state_dir, unrelated_process.pid)

    with caplog.at_level(logging.WARNING, logger="lakeloop.services"):
        assert main(["services", "down"]) == 0

    assert unrelated_process.poll() is None, "services down signalled a process lakeloop did not start"
    assert not pid_file.exists()
    assert capsys.readouterr().out.strip() == "kafka broker: stopped"
    assert f"{pid_file} named pid {unrelated_process.pid}, which is not the broker started there" in caplog.text
    assert "removed the stale pid file and signalled nothing" in caplog.text


def test_services_status_does_not_report_a_reused_pid_as_the_broker(state_dir, unrelated_process, capsys):
    write_stale_pid_file(state_dir, unrelated_process.pid)

    assert main(["services", "status"]) == 0

    assert capsys.readouterr().out.strip() == "kafka broker: stopped"
    assert unrelated_process.poll() is None


def new_topic(bootstrap: str, partitions: int = 1) -> str:
    """A fresh topic that keeps its records forever."""
    topic = f"services-{free_port()}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics({topic: {"num_partitions": partitions, "replication_factor": 1,
                                 "configs": {"retention.ms": "-1"}}}, wait_for_metadata=True)
    admin.close()
    return topic


def described_brokers(bootstrap: str) -> list[tuple[str, int]]:
    """The live brokers' addresses, as the cluster describes them over the Kafka protocol."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return [(broker["host"], broker["port"]) for broker in admin.describe_cluster()["brokers"]]
    finally:
        admin.close()


def produce(bootstrap: str, topic: str, values: list[bytes], batch_size: int = 16 * 1024) -> None:
    """Send `values` to partition 0 of `topic` and wait until the broker has acknowledged all of them."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, batch_size=batch_size)
    for value in values:
        producer.send(topic, partition=0, value=value)
    producer.flush()
    producer.close()


def read_all(bootstrap: str, topic: str, **limits: int) -> tuple[list[bytes], dict[str, float]]:
    """Every value of partition 0 of `topic`, and the consumer's fetch metrics of the read."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, **limits)
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        end = consumer.end_offsets([partition])[partition]
        values = []
        while consumer.position(partition) < end:
            values += [record.value for record in consumer.poll(timeout_ms=1000).get(partition, [])]
        consumer.poll(timeout_ms=100)  # kafka-python records a fetch's size once the next poll finds it drained
        return values, consumer.metrics()["consumer-fetch-manager-metrics"]
    finally:
        consumer.close(autocommit=False)


def test_the_broker_it_started_is_apache_kafka_recognised_and_stopped(tmp_path):
    broker = EmbeddedBroker(state_dir=tmp_path, port=free_port())
    assert broker.start() is True
    try:
        pid = broker.pid()
        assert pid is not None and described_brokers(broker.bootstrap) == [(broker.host, broker.port)]
        assert broker.status().startswith("kafka broker: apache kafka 4.")
        assert f"running (pid {pid}) on {broker.bootstrap}, listening" in broker.status()
        assert broker.start() is False, "ours already runs"
    finally:
        broker.stop()
    assert broker.pid() is None and not broker.pid_file.exists()
    assert not port_open(broker.host, broker.port)
    assert broker.status() == "kafka broker: stopped"


def test_a_fetch_returns_about_fetch_max_bytes_not_the_whole_log(kafka_broker):
    topic = new_topic(kafka_broker.bootstrap)
    produce(kafka_broker.bootstrap, topic, [b"%06d" % n + b"x" * 1000 for n in range(4000)])

    values, metrics = read_all(kafka_broker.bootstrap, topic, fetch_max_bytes=FETCH_BYTES,
                               max_partition_fetch_bytes=FETCH_BYTES)

    assert len(values) == 4000
    assert 0 < metrics["fetch-size-max"] <= 2 * FETCH_BYTES, (
        f"one fetch returned {metrics['fetch-size-max']:,.0f} bytes for a {FETCH_BYTES:,}-byte limit")


def test_a_restart_keeps_the_topics_records_and_its_formatted_storage(tmp_path):
    broker = EmbeddedBroker(state_dir=tmp_path, port=free_port())
    broker.start()
    try:
        topic = new_topic(broker.bootstrap)
        produce(broker.bootstrap, topic, [b"record %d" % n for n in range(100)])
        meta = (broker.data_dir / "meta.properties").read_text()
        controller_port = broker.controller_port_file.read_text()
        broker.stop()
        assert not port_open(broker.host, broker.port)

        assert broker.start() is True
        values, _ = read_all(broker.bootstrap, topic)
    finally:
        broker.stop()
    assert values == [b"record %d" % n for n in range(100)]
    assert (broker.data_dir / "meta.properties").read_text() == meta, "the storage was formatted again"
    assert broker.controller_port_file.read_text() == controller_port


def test_a_stale_pid_file_naming_another_brokers_process_is_not_signalled(tmp_path, caplog):
    """The pid now belongs to a process that looks like a Kafka broker, but of another state directory."""
    other_config = tmp_path / "other" / "server.properties"
    process = subprocess.Popen([sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(600)",
                                "kafka.Kafka", str(other_config)], stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        assert process.stdout.readline() == "ready\n"
        broker = EmbeddedBroker(state_dir=tmp_path / "ours", port=free_port())
        broker.state_dir.mkdir()
        broker.pid_file.write_text(f"{process.pid}\n")

        assert broker.pid() is None
        with caplog.at_level(logging.WARNING, logger="lakeloop.services"):
            broker.stop()

        assert process.poll() is None, "stop signalled another broker's process"
        assert not broker.pid_file.exists()
        assert "removed the stale pid file and signalled nothing" in caplog.text
    finally:
        process.kill()
        process.communicate()


def test_missing_kafka_jars_say_to_run_make_setup(tmp_path):
    broker = EmbeddedBroker(state_dir=tmp_path / "broker", port=free_port(), kafka_lib=tmp_path / "no-jars")

    with pytest.raises(BrokerError, match=r"jars are missing .*no-jars.*run `make setup`"):
        broker.start()

    assert broker.pid() is None and not broker.pid_file.exists()
    assert not port_open(broker.host, broker.port)


def test_missing_java_says_to_install_it(tmp_path, monkeypatch):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    broker = EmbeddedBroker(state_dir=tmp_path / "broker", port=free_port())

    with pytest.raises(BrokerError, match=r"needs Java 17 or newer, and there is no `java` on PATH"):
        broker.start()

    assert broker.pid() is None and not broker.pid_file.exists()


def test_the_first_broker_of_a_jar_folder_leaves_a_class_archive_the_next_start_uses(tmp_path):
    jars = tmp_path / "jars"
    jars.mkdir()
    for jar in EmbeddedBroker(state_dir=tmp_path, port=0).kafka_lib.glob("*.jar"):
        (jars / jar.name).symlink_to(jar)
    broker = EmbeddedBroker(state_dir=tmp_path / "broker", port=free_port(), kafka_lib=jars)

    broker.start()
    broker.stop()
    archives = list(jars.glob("classes-*.jsa"))
    assert len(archives) == 1 and not list(broker.state_dir.glob("*.jsa"))

    broker.start()
    try:
        command_line = Path(f"/proc/{broker.pid()}/cmdline").read_bytes().split(b"\0")
    finally:
        broker.stop()
    assert f"-XX:SharedArchiveFile={archives[0]}".encode() in command_line
