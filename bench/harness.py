"""What every benchmark shares: a local Spark session, best-of-rounds timings and target verdicts, markdown tables,
scratch directories, and child processes that report one JSON line. Nothing benchmark-specific.

Benchmarks are `bench/<name>.py` modules run as `python -m bench.<name>`; their shared pieces live in `bench/support/`.
See docs/performance.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

REPO = Path(__file__).resolve().parents[1]
TENSORFLOW_PRELOAD_DIR = Path(__file__).resolve().parent / "tensorflow_preload"
PRELOAD_VARIABLE = "LAKELOOP_BENCH_PRELOAD_TENSORFLOW"
SPARK_CONF = {
    "spark.python.worker.reuse": "false",  # a fresh Python worker per task, as `tfspark-submit` sets
    "spark.sql.shuffle.partitions": "2",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.memory": "4g",
}
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------------------
# Spark and TensorFlow


def local_environment() -> None:
    """Default the variables every benchmark runs with: Spark on 127.0.0.1 with this Python, TensorFlow quiet."""
    for name, value in (("PYSPARK_PYTHON", sys.executable), ("SPARK_LOCAL_IP", "127.0.0.1"),
                        ("TF_CPP_MIN_LOG_LEVEL", "2")):
        os.environ.setdefault(name, value)


def start_spark(app_name: str, *, preload_tensorflow: bool = False, conf: dict[str, str] | None = None) -> SparkSession:
    """A local[2] session with `SPARK_CONF` (updated by `conf`).

    With `preload_tensorflow` its Python workers fork from a daemon that imported TensorFlow
    (`bench/tensorflow_preload`), so they start with it loaded (`tensorflow_import_seconds` measures what a fresh
    worker pays instead); without, every worker imports it, as in a real job.
    """
    local_environment()
    if str(TENSORFLOW_PRELOAD_DIR) not in os.environ.get("PYTHONPATH", ""):
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TENSORFLOW_PRELOAD_DIR),
                                                                 os.environ.get("PYTHONPATH")]))
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master("local[2]").appName(app_name)
    for key, value in {**SPARK_CONF, **(conf or {}), f"spark.executorEnv.{PRELOAD_VARIABLE}":
                       "1" if preload_tensorflow else "0"}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    if preload_tensorflow:  # start the daemon of Arrow UDFs' workers, which imports TensorFlow, before any timing
        spark.range(2, numPartitions=2).mapInArrow(lambda batches: batches, "id long").collect()
    return spark


def tensorflow_import_seconds() -> float:
    """Seconds a fresh Python process takes to import TensorFlow (what a Spark worker without the preload pays)."""
    environment = {key: value for key, value in os.environ.items() if key != PRELOAD_VARIABLE}
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import tensorflow"], env=environment, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


# ---------------------------------------------------------------------------------------------------------
# Rounds, best-of and targets


@dataclass(frozen=True)
class Measurement:
    """Rows (examples, pairs, ...) one alternative delivered, and the seconds it took."""

    name: str
    rows: int
    seconds: float
    note: str = ""

    @property
    def rows_per_second(self) -> float:
        """Delivered rows per second."""
        return self.rows / self.seconds


def best_of(rounds: list[Measurement]) -> Measurement:
    """The fastest round, its note saying how many rounds ran and their spread."""
    best = max(rounds, key=lambda result: result.rows_per_second)
    if len(rounds) == 1:
        return best
    rates = [result.rows_per_second for result in rounds]
    spread = f"best of {len(rounds)} ({min(rates):,.0f}–{max(rates):,.0f} rows/s)"
    return dataclasses.replace(best, note=f"{best.note}; {spread}" if best.note else spread)


def round_order(items: Sequence[T], round_index: int) -> list[T]:
    """`items` in order on even rounds, reversed on odd ones: interleaved rounds share out a busy machine's slowdown."""
    return list(reversed(items) if round_index % 2 else items)


def verdict(best: float, median: float, target: float) -> str:
    """Met only if the best-of and the median round both reach the target; split means too noisy to tell."""
    if best >= target and median >= target:
        return "met"
    if best < target and median < target:
        return "NOT met"
    return "inconclusive (the rounds disagree)"


# ---------------------------------------------------------------------------------------------------------
# Output


def table_header(header: Sequence[str], align: str) -> list[str]:
    """A markdown table's first two lines; `align` has a letter per column: `l` left, `r` right."""
    if len(align) != len(header):
        raise ValueError(f"{len(header)} columns, {len(align)} alignments")
    return [table_row(header), "|" + "".join("--:|" if side == "r" else "---|" for side in align)]


def table_row(cells: Iterable[object]) -> str:
    """One markdown table row."""
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def markdown_table(header: Sequence[str], rows: Iterable[Iterable[object]], align: str) -> list[str]:
    """A whole markdown table as lines (see `table_header`)."""
    return [*table_header(header, align), *(table_row(row) for row in rows)]


def parse_sizes(text: str) -> list[int]:
    """`"1000000,5_000_000"` → [1000000, 5000000]; `""` → []."""
    return [int(part.strip().replace("_", "")) for part in text.split(",") if part.strip()]


@contextmanager
def work_directory(given: Path | None, prefix: str) -> Iterator[Path]:
    """`given` (kept), or a fresh temporary directory removed at the end."""
    if given is not None:
        yield given
        return
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------
# Child processes


def module_command(module: str, *arguments: str) -> list[str]:
    """The command that runs `module` (e.g. `bench.e2e_train_step`) with this interpreter."""
    return [sys.executable, "-m", module, *arguments]


def child_environment(**overrides: str) -> dict[str, str]:
    """This process's environment with the repository first on PYTHONPATH (so `bench` imports from any directory)."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **overrides}


def print_json_line(payload: Any) -> None:
    """A child's report to its parent: one JSON line on stdout, the last one it prints."""
    print(json.dumps(payload), flush=True)


def last_json_line(output: str) -> Any:
    """What a child reported with `print_json_line`: its output's last line, parsed."""
    return json.loads(output.strip().splitlines()[-1])


def git_head() -> str:
    """The repository's HEAD commit (what the figures were measured on, plus any uncommitted edits)."""
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()
