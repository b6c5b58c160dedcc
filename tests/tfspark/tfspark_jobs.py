"""Running real tfspark jobs from tests: `tfspark-submit` as a user runs it, one Spark application each.

Every job is its own application (a fresh JVM), so each test chooses its master and Spark settings
(`local-cluster` for GPU scheduling, say) and no SparkSession leaks between tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
TFSPARK_SUBMIT = str(Path(sys.executable).parent / "tfspark-submit")
TINY_TRAINER = "tiny_trainer:TinyRatingsTrainer"
# Short test jobs: the C1 JIT alone and the serial GC start a JVM with about a third less CPU.
FAST_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


@dataclass
class SubmitResult:
    """A finished `tfspark-submit` run: exit code, output and the summary it wrote (if any)."""

    returncode: int
    stdout: str
    stderr: str
    output_dir: Path

    @property
    def summary(self) -> dict:
        return json.loads((self.output_dir / "train_summary.json").read_text())

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join((self.stdout + self.stderr).splitlines()[-lines:])


def spark_home_in(work_dir: Path) -> Path:
    """A SPARK_HOME mirroring pyspark's (symlinks) whose `work/` is under `work_dir`.

    `local-cluster` workers put executor logs in `$SPARK_HOME/work` and ignore SPARK_WORKER_DIR; pointed at
    pyspark's own directory, that would write into the virtualenv.
    """
    import pyspark

    real_home = Path(pyspark.__file__).resolve().parent
    home = work_dir / "spark-home"
    if not home.exists():
        home.mkdir(parents=True)
        for entry in real_home.iterdir():
            if entry.name != "work":
                (home / entry.name).symlink_to(entry)
        (home / "work").mkdir()
    return home


def submit_env(work_dir: Path) -> dict[str, str]:
    """The environment of a test job: the venv's python everywhere, the tiny trainer importable."""
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")])),
        PYSPARK_PYTHON=sys.executable,
        SPARK_HOME=str(spark_home_in(work_dir)),
        SPARK_LOCAL_IP="127.0.0.1",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    return env


def start_submit(args: list[str], output_dir: Path, work_dir: Path) -> subprocess.Popen:
    """Start `tfspark-submit args --output-dir output_dir` with test-friendly Spark settings.

    The run gets its own process group, so `stop_submit` can end spark-submit, its JVM and the Python
    workers together.
    """
    command = [
        TFSPARK_SUBMIT,
        *args,
        "--output-dir",
        output_dir.as_uri(),
        "--conf",
        "spark.ui.enabled=false",
        "--conf",
        "spark.sql.shuffle.partitions=2",
        "--conf",
        f"spark.executorEnv.PYTHONPATH={HERE}",
        "--conf",
        f"spark.driver.extraJavaOptions={FAST_JVM}",
        "--conf",
        f"spark.executor.extraJavaOptions={FAST_JVM}",
    ]
    return subprocess.Popen(
        command,
        env=submit_env(work_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def stop_submit(process: subprocess.Popen) -> None:
    """Kill a run still going (its whole process group) and reap it."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate()


def finish_submit(process: subprocess.Popen, output_dir: Path, timeout: float = 900) -> SubmitResult:
    """Wait for a started run and collect its result."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise AssertionError(f"tfspark-submit did not finish in {timeout}s:\n{stderr[-3000:]}") from None
    return SubmitResult(process.returncode, stdout, stderr, output_dir)


class ConcurrentRuns:
    """Several `tfspark-submit` runs started side by side; `result(name)` waits for one of them.

    A test run spends most of its time starting a JVM and importing TensorFlow, so starting the
    scenarios of a module together saves wall time on a small machine; each test still checks its own.
    """

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self._started: dict[str, tuple[subprocess.Popen, Path]] = {}
        self._finished: dict[str, SubmitResult] = {}

    def path(self, name: str) -> Path:
        """A scratch path for a scenario (markers, fault-injection files)."""
        return self.base_dir / "files" / name

    def start(self, name: str, args: list[str]) -> None:
        """Start scenario `name`; its output directory is `<base_dir>/<name>`."""
        (self.base_dir / "files").mkdir(parents=True, exist_ok=True)
        output_dir = self.base_dir / name
        self._started[name] = (start_submit(args, output_dir, self.base_dir / "spark-work"), output_dir)

    def result(self, name: str) -> SubmitResult:
        """Wait for scenario `name` to finish and return its result."""
        if name not in self._finished:
            process, output_dir = self._started[name]
            self._finished[name] = finish_submit(process, output_dir)
        return self._finished[name]

    def recovered_summary(self, name: str) -> dict:
        """The summary of scenario `name`, checked: a worker really died (its `<name>.marker` fail marker exists,
        Spark saw the Python worker exit) and the rerun finished."""
        result = self.result(name)
        assert result.returncode == 0, result.log_tail()
        assert self.path(f"{name}.marker").exists(), "the injected failure did not happen"
        assert "Python worker exited unexpectedly" in result.stderr
        return result.summary

    def stop_all(self) -> None:
        """Kill whatever still runs (after a failed test)."""
        for process, _ in self._started.values():
            stop_submit(process)
