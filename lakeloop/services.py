"""The embedded services of the default set-up: one Kafka-protocol broker (noida-db) on 127.0.0.1.

Everything else needs no server: Airflow and MLflow use SQLite files, the lake is a local directory
and Spark runs in local mode. Production points `LAKELOOP_KAFKA_BOOTSTRAP` at a real Apache Kafka.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


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

    def pid(self) -> int | None:
        """The pid of the broker this state directory started, if it is still alive."""
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
            return None
        return pid

    def start(self, timeout: float = 30.0) -> bool:
        """Start the broker and wait until it accepts connections; False (nothing done) when ours already runs."""
        if self.pid() is not None and port_open(self.host, self.port):
            return False
        if port_open(self.host, self.port):
            raise BrokerError(f"port {self.port} is taken by a process lakeloop did not start")
        data_dir = self.state_dir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        command = [_noida_binary(), "start", "--data-dir", str(data_dir), "--host", self.host,
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
        """Stop the broker this state directory started (by pid), waiting for it to exit."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid() is None or _is_zombie(pid):
                break
            time.sleep(0.1)
        else:
            _signal_group(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

    def status(self) -> str:
        """One line saying whether the broker runs and where."""
        pid = self.pid()
        if pid is None:
            return "kafka broker: stopped"
        reachable = "listening" if port_open(self.host, self.port) else "not answering"
        return f"kafka broker: running (pid {pid}) on {self.bootstrap}, {reachable}; data in {self.state_dir}"


def _signal_group(pid: int, signum: int) -> None:
    """Signal the broker's whole process group: the `noida-db` launcher runs the server as a child."""
    try:
        os.killpg(os.getpgid(pid), signum)
    except ProcessLookupError:
        pass


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True
