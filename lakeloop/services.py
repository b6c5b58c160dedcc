"""The embedded services of the default set-up: one Kafka-protocol broker (noida-db) on 127.0.0.1.

Everything else needs no server: Airflow and MLflow use SQLite files, the lake is a local directory
and Spark runs in local mode. Production points `LAKELOOP_KAFKA_BOOTSTRAP` at a real Apache Kafka.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The embedded broker could not be started or reached."""


def _noida_binary() -> str:
    found = shutil.which("noida-db", path=str(Path(sys.executable).parent)) or shutil.which("noida-db")
    if not found:
        raise BrokerError("noida-db is not installed; run `make setup`")
    return found


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


@dataclass
class EmbeddedBroker:
    """A noida-db process serving only the Kafka protocol, owned through a pid file in `state_dir`."""

    state_dir: Path
    port: int
    host: str = "127.0.0.1"

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
    def data_dir(self) -> Path:
        """The broker's data directory, named on its command line: what tells our broker from another process."""
        return (self.state_dir / "data").absolute()

    def recorded_pid(self) -> int | None:
        """The pid the pid file names, alive or not (None without a readable pid file)."""
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def is_ours(self, pid: int) -> bool:
        """Whether `pid` is alive and is the broker started on this state directory: a `noida-db start` whose
        command line names our data directory. A pid the system gave to another process since is not."""
        arguments = _command_line(pid)
        return any(name == "--data-dir" and Path(value).resolve() == self.data_dir.resolve()
                   for name, value in zip(arguments, arguments[1:], strict=False))

    def pid(self) -> int | None:
        """The pid of the broker this state directory started, if it is still alive."""
        pid = self.recorded_pid()
        return pid if pid is not None and self.is_ours(pid) else None

    def start(self, timeout: float = 30.0) -> bool:
        """Start the broker and wait until it accepts connections; False (nothing done) when ours already runs."""
        if self.pid() is not None and port_open(self.host, self.port):
            return False
        if port_open(self.host, self.port):
            raise BrokerError(f"port {self.port} is taken by a process lakeloop did not start")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [_noida_binary(), "start", "--data-dir", str(self.data_dir), "--host", self.host,
                   "--only", "kafka", "--kafka-port", str(self.port)]
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid_file.write_text(str(process.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BrokerError(f"noida-db exited with {process.returncode}; see {self.log_file}")
            if port_open(self.host, self.port):
                return True
            time.sleep(0.2)
        self.stop()
        raise BrokerError(f"noida-db did not listen on {self.bootstrap} within {timeout:.0f}s")

    def stop(self, timeout: float = 10.0) -> None:
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
                _signal_group(pid, signal.SIGKILL)
                break
            time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)

    def _remove_stale_pid_file(self) -> None:
        stale = self.recorded_pid()
        arguments = _command_line(stale) if stale is not None else []
        if arguments:
            logger.warning("%s named pid %d, which is not the broker started there (it runs %r): removed the stale "
                        "pid file and signalled nothing", self.pid_file, stale, " ".join(arguments)[:200])
        self.pid_file.unlink(missing_ok=True)

    def status(self) -> str:
        """One line saying whether the broker runs and where."""
        pid = self.pid()
        if pid is None:
            return "kafka broker: stopped"
        reachable = "listening" if port_open(self.host, self.port) else "not answering"
        return f"kafka broker: running (pid {pid}) on {self.bootstrap}, {reachable}; data in {self.state_dir}"


def _command_line(pid: int) -> list[str]:
    """The arguments of a live process (empty when it does not exist, is a zombie or cannot be read)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return [part.decode(errors="replace") for part in cmdline.read().split(b"\0") if part]
    except OSError:
        return []


def _signal_group(pgid: int, signum: int) -> None:
    """Signal the broker's whole process group: the `noida-db` launcher leads it (it was started in a session of
    its own) and runs the server as a child, which keeps the group after the launcher exits."""
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
