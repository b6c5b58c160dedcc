"""The embedded services of the default set-up: one single-node Apache Kafka broker (KRaft) on 127.0.0.1.

Everything else needs no server: Airflow and MLflow use SQLite files, the lake is a local directory
and Spark runs in local mode. Production points `LAKELOOP_KAFKA_BOOTSTRAP` at its own Kafka cluster.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

KAFKA_LIB_DIR = Path(__file__).resolve().parents[1] / "jvm" / "lib" / "kafka"
KAFKA_MAIN_CLASS = "kafka.Kafka"
NODE_ID = 1
# A small heap (docs/operations.md, "Embedded broker", says what the broker used); the quick JIT only and one GC
# thread: the broker of a test or a daily run lives minutes, and C2 would compile more than it ever runs.
JVM_OPTIONS = [
    "-Xms64m", "-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
    "-Dorg.slf4j.simpleLogger.showDateTime=true",
    "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd HH:mm:ss.SSS",
    # The broker prints every configuration it builds (thousands of lines per start); warnings still show.
    "-Dorg.slf4j.simpleLogger.log.org.apache.kafka.common.config.AbstractConfig=warn",
]


class BrokerError(RuntimeError):
    """The embedded broker could not be started or reached."""


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers_kafka(bootstrap: str, timeout: float = 2.0) -> bool:
    """Whether a Kafka broker at `bootstrap` answers a metadata request and lists itself as a live broker (an
    open port alone is not enough: Kafka binds its listener before it serves requests)."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    timeout_ms = int(timeout * 1000)
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="lakeloop-services",
                                 bootstrap_timeout_ms=timeout_ms, request_timeout_ms=timeout_ms)
    except KafkaError:
        return False
    try:
        return bool(admin.describe_cluster().get("brokers"))
    except KafkaError:
        return False
    finally:
        admin.close()


@dataclass
class EmbeddedBroker:
    """A single-node Apache Kafka (broker and KRaft controller in one JVM) run from the jars `make setup` put in
    `kafka_lib`, with its configuration, storage and pid file in `state_dir`."""

    state_dir: Path
    port: int
    host: str = "127.0.0.1"
    kafka_lib: Path = KAFKA_LIB_DIR

    @property
    def bootstrap(self) -> str:
        """The bootstrap address clients connect to."""
        return f"{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "broker.log"

    @property
    def config_file(self) -> Path:
        """The broker's server.properties, named on its command line: what tells our broker from another process."""
        return (self.state_dir / "server.properties").absolute()

    @property
    def data_dir(self) -> Path:
        """The broker's `log.dirs`: the topics' records and the KRaft metadata log."""
        return (self.state_dir / "kafka-logs").absolute()

    @property
    def controller_port_file(self) -> Path:
        """Where the controller port chosen at the first start is kept: the formatted storage records the
        controller's address, so every later start must listen on the same port."""
        return self.state_dir / "controller.port"

    def kafka_version(self) -> str:
        """The Apache Kafka version of the jars in `kafka_lib` ("unknown" without them)."""
        jars = sorted(self.kafka_lib.glob("kafka_2.13-*.jar"))
        return jars[-1].name.removeprefix("kafka_2.13-").removesuffix(".jar") if jars else "unknown"

    def recorded_pid(self) -> int | None:
        """The pid the pid file names, alive or not (None without a readable pid file)."""
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def is_ours(self, pid: int) -> bool:
        """Whether `pid` is alive and is the broker started on this state directory: a `java ... kafka.Kafka`
        whose command line names our server.properties. A pid the system gave to another process since is not."""
        arguments = _command_line(pid)
        return KAFKA_MAIN_CLASS in arguments and any(
            Path(argument).resolve() == self.config_file.resolve() for argument in arguments
            if argument.endswith("server.properties"))

    def pid(self) -> int | None:
        """The pid of the broker this state directory started, if it is still alive."""
        pid = self.recorded_pid()
        return pid if pid is not None and self.is_ours(pid) else None

    def start(self, timeout: float = 120.0) -> bool:
        """Start the broker (formatting its storage on the first start) and wait until it answers the Kafka
        protocol; False (nothing done) when ours already runs."""
        if self.pid() is not None and port_open(self.host, self.port):
            return False
        if port_open(self.host, self.port):
            raise BrokerError(f"port {self.port} is taken by a process lakeloop did not start: stop it, or point "
                              "LAKELOOP_KAFKA_BOOTSTRAP at another port")
        java, classpath = _java_binary(), self._classpath()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        controller_port = self._controller_port()
        self._write_config(controller_port)
        self._format_storage(java, classpath)
        command = [java, *JVM_OPTIONS, *self._class_archive_options(java), "-cp", classpath, KAFKA_MAIN_CLASS,
                   str(self.config_file)]
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid_file.write_text(str(process.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BrokerError(f"the Kafka broker exited with {process.returncode} while starting; see "
                                  f"{self.log_file}")
            if port_open(self.host, self.port) and answers_kafka(self.bootstrap):
                return True
            time.sleep(0.2)
        self.stop()
        raise BrokerError(f"the Kafka broker did not answer on {self.bootstrap} within {timeout:.0f}s; see "
                          f"{self.log_file}")

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the broker this state directory started (its process group), waiting until every process of it has
        exited. A pid file naming a pid that is no longer our broker is removed without signalling anything."""
        pid = self.pid()
        if pid is None:
            self._remove_stale_pid_file()
            return
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _group_runs(pid):
            if time.monotonic() >= deadline:
                logger.warning("the Kafka broker (pid %d) did not stop within %.0fs of SIGTERM: killed it", pid,
                               timeout)
                _signal_group(pid, signal.SIGKILL)
                break
            time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        self._keep_class_archive()

    def _remove_stale_pid_file(self) -> None:
        stale = self.recorded_pid()
        arguments = _command_line(stale) if stale is not None else []
        if arguments:
            logger.warning("%s named pid %d, which is not the broker started there (it runs %r): removed the stale "
                           "pid file and signalled nothing", self.pid_file, stale, " ".join(arguments)[:200])
        self.pid_file.unlink(missing_ok=True)

    def status(self) -> str:
        """One line saying whether the broker runs, which Kafka it is and where."""
        pid = self.pid()
        if pid is None:
            return "kafka broker: stopped"
        reachable = "listening" if port_open(self.host, self.port) else "not answering"
        return (f"kafka broker: apache kafka {self.kafka_version()} broker (KRaft, single node) running (pid {pid}) "
                f"on {self.bootstrap}, {reachable}; data in {self.state_dir}")

    def _classpath(self) -> str:
        if not any(self.kafka_lib.glob("kafka_2.13-*.jar")):
            raise BrokerError(f"the Apache Kafka broker's jars are missing (no kafka_2.13-*.jar in {self.kafka_lib}); "
                              "run `make setup`, which resolves them with Maven from jvm/kafka/pom.xml")
        return f"{self.kafka_lib}/*"

    def _class_archive(self, java: str) -> Path:
        """The shared class archive (AppCDS) of the jars in `kafka_lib` for this JVM: loading the broker's classes
        from it instead of 45 jars makes a start take a third of the CPU. Named by the JVM's path and mtime, as an
        archive only serves the JVM that wrote it; `make setup` deletes it with the jars it was made from."""
        real_java = Path(java).resolve()
        key = hashlib.sha256(f"{real_java}:{real_java.stat().st_mtime_ns}".encode()).hexdigest()[:12]
        return self.kafka_lib / f"classes-{key}.jsa"

    def _class_archive_options(self, java: str) -> list[str]:
        """Use the class archive, or write one into the state directory when this broker exits (`stop` moves it
        next to the jars); none when the jars' folder is read-only."""
        archive = self._class_archive(java)
        if archive.exists():
            return [f"-XX:SharedArchiveFile={archive}"]
        if os.access(self.kafka_lib, os.W_OK):
            return [f"-XX:ArchiveClassesAtExit={self.state_dir / archive.name}"]
        return []

    def _keep_class_archive(self) -> None:
        """Move the class archive the stopped broker wrote into `kafka_lib`, for every later start (a rename: a
        broker reading an older copy keeps it)."""
        for written in self.state_dir.glob("classes-*.jsa"):
            try:
                os.replace(written, self.kafka_lib / written.name)
            except OSError as error:
                logger.warning("could not keep the broker's class archive %s in %s (%s); the next start writes "
                               "another", written, self.kafka_lib, error)
                written.unlink(missing_ok=True)

    def _controller_port(self) -> int:
        """The KRaft controller's port: the one recorded at the first start, or a free one recorded now."""
        try:
            port = int(self.controller_port_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            port = free_port()
            self.controller_port_file.write_text(f"{port}\n")
            return port
        if port_open(self.host, port):
            raise BrokerError(f"the broker's controller port {port} (recorded in {self.controller_port_file} when "
                              f"its storage was formatted) is taken by another process: stop that process, or "
                              f"delete {self.state_dir} to start a new broker (its topics are lost)")
        return port

    def _write_config(self, controller_port: int) -> None:
        """server.properties for this start: the broker port may change between starts, the controller's may not."""
        controller = f"{self.host}:{controller_port}"
        settings = {
            "process.roles": "broker,controller",
            "node.id": NODE_ID,
            "listeners": f"PLAINTEXT://{self.bootstrap},CONTROLLER://{controller}",
            "advertised.listeners": f"PLAINTEXT://{self.bootstrap}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "controller.quorum.bootstrap.servers": controller,
            "log.dirs": self.data_dir,
            # lakeloop creates its topics (with their partition counts and retention); a typo must not create one.
            "auto.create.topics.enable": "false",
            "num.partitions": 1,
            # One node: every internal topic has one replica, and one partition each (50 by default, which
            # makes the first consumer group's commit wait for 50 partitions to be created).
            "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": 1,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "transaction.state.log.num.partitions": 1,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "share.coordinator.state.topic.num.partitions": 1,
            "group.initial.rebalance.delay.ms": 0,
            # The compaction of __consumer_offsets keeps its offset map on the heap: 128 MiB by default, half of
            # the heap and more than everything else the broker holds; a few committed offsets need far less.
            "log.cleaner.dedupe.buffer.size": 8 * 1024 * 1024,
        }
        self.config_file.write_text("".join(f"{name}={value}\n" for name, value in settings.items()))

    def _format_storage(self, java: str, classpath: str) -> None:
        """Format `log.dirs` for a new single-node cluster, once: a formatted directory keeps its records."""
        if (self.data_dir / "meta.properties").exists():
            return
        archive = self._class_archive(java)
        shared = [f"-XX:SharedArchiveFile={archive}"] if archive.exists() else []
        command = [java, "-Xmx128m", "-XX:TieredStopAtLevel=1", *shared, "-cp", classpath, "kafka.tools.StorageTool",
                   "format", "--standalone",
                   "--cluster-id", _new_cluster_id(), "--config", str(self.config_file)]
        formatted = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if formatted.returncode != 0:
            output = (formatted.stdout + formatted.stderr).strip().splitlines()
            raise BrokerError(f"formatting the Kafka broker's storage in {self.data_dir} failed (exit "
                              f"{formatted.returncode}): {' / '.join(output[-5:])}")


def _java_binary() -> str:
    """The `java` of JAVA_HOME, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.access(Path(java_home, "bin", "java"), os.X_OK):
        return str(Path(java_home, "bin", "java"))
    found = shutil.which("java")
    if not found:
        raise BrokerError("the embedded Kafka broker needs Java 17 or newer, and there is no `java` on PATH or in "
                          "JAVA_HOME: install it (Debian: apt-get install openjdk-17-jre-headless), then run "
                          "`make setup`")
    return found


def _new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (Kafka's own ids never start
    with '-', which its command-line tools would read as an option)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _command_line(pid: int) -> list[str]:
    """The arguments of a live process (empty when it does not exist, is a zombie or cannot be read)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return [part.decode(errors="replace") for part in cmdline.read().split(b"\0") if part]
    except OSError:
        return []


def _signal_group(pgid: int, signum: int) -> None:
    """Signal the broker's whole process group: the JVM was started in a session of its own and leads it."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def _group_runs(pgid: int) -> bool:
    """Whether a process of the group `pgid` still runs (zombies waiting to be reaped do not count)."""
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _parent, group = stat_file.read_text().rpartition(")")[2].split()[:3]
        except (OSError, ValueError):
            continue
        if int(group) == pgid and state != "Z":
            return True
    return False
