"""`lakeloop services`: the embedded broker is signalled only while its pid file names the broker itself."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lakeloop.cli import main
from lakeloop.services import EmbeddedBroker, free_port, port_open


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


def test_the_broker_it_started_is_recognised_and_stopped(tmp_path):
    broker = EmbeddedBroker(state_dir=tmp_path, port=free_port())
    assert broker.start() is True
    try:
        pid = broker.pid()
        assert pid is not None and broker.status().startswith(f"kafka broker: running (pid {pid})")
        assert broker.start() is False, "ours already runs"
    finally:
        broker.stop()
    assert broker.pid() is None and not broker.pid_file.exists()
    assert not port_open(broker.host, broker.port)
