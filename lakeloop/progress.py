"""What `lakeloop run` shows while the DAG runs: each task's state and duration from the Airflow metadata
database, the running task's own progress parsed from its log lines, and on failure the error lines that matter.

See docs/operations.md (`lakeloop run` output and failures).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any

FINISHED = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})
FAILED = frozenset({"failed", "upstream_failed"})
ON_THE_WAY = frozenset({"scheduled", "queued"})  # the moments before a task runs: not worth a line
ERROR_LINE_LIMIT = 8
PLAIN_PROGRESS_LINES = 4  # training lines in a plain log: at 0, 1/4, 1/2 and 3/4 of the steps
LINE_WIDTH_LIMIT = 300
FAILURE_HINTS_DOC = "docs/operations.md#when-lakeloop-run-fails"

TRAINING_STEP = re.compile(r"rank \d+ step (?P<step>\d+)/(?P<total>\d+) epoch (?P<epoch>\d+)/(?P<epochs>\d+) "
                           r"loss (?P<loss>[-+.\deE]+|nan|inf)")
TASK_START = re.compile(r"\[DAG TEST\] starting task_id=(?P<task_id>\S+)")
INGEST_PROGRESS = re.compile(r"(?P<done>\d+)/(?P<total>\d+) records of the slice done")
INGEST_RESULT = re.compile(r"read (?P<read>\d+), written (?P<written>\d+), rejected (?P<rejected>\d+)")
SKIP_REASON = re.compile(r"Skipping task\..*reason=(?P<quote>['\"])(?P<reason>.*?)(?P=quote)")
# A line of `airflow dags test` output: "<ISO time> [<level>] <message> [<logger>] key=value ...".
STRUCTURED_LINE = re.compile(r"^\S+Z \[(?P<level>\w+)\s*\] (?P<message>.*?)(?: \[[\w.]+\](?: \w+=.*)?)?$")
SPARK_LINE = re.compile(r"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d (?P<level>[A-Z]+) (?P<message>.*)$")
EXCEPTION_LINE = re.compile(r"^(?:Caused by: |Exception in thread \"[^\"]*\" )?"
                            r"(?:[\w.]+\.)?\w*(?:Error|Exception|Exit|Failure)\b(?::|$)")
NOISE = re.compile(r"^(?:\s*at [\w.$<>]+\(|\s*\.\.\. \d+ more|Traceback \(most recent call last\)|\s*File \")")
# What an error line says about the cause, whichever task printed it; checked before the task's own hint.
ERROR_HINTS = (
    (re.compile(r"Master must either be|All masters are unresponsive|Failed to connect to master"),
     "Spark cannot use the master of the `spark_default` connection: fix its host (or unset "
     "AIRFLOW_CONN_SPARK_DEFAULT for the embedded local[*])"),
    (re.compile(r"NoBrokersAvailable|KafkaConnectionError|KafkaSliceError"),
     "no Kafka broker answers at LAKELOOP_KAFKA_BOOTSTRAP: `lakeloop services up`, or fix the address"),
    (re.compile(r"ConcurrentWriteError"), "another run writes the same day: let it finish, then rerun this day"),
    (re.compile(r"[Dd]ata.quality|DataQualityError"),
     "a data-quality check failed: its message names the check and the run param that relaxes it "
     "(docs/etl-and-features.md#data-quality)"),
)
HINTS = {
    "ingest_ratings": "is the broker up (`lakeloop services status`) and LAKELOOP_KAFKA_BOOTSTRAP right?",
    "spark_etl": "Spark, or a data-quality check (its message names the check and the run param)",
    "spark_features": "Spark: check the `spark_default` connection (master) and the memory free",
    "train_model": "TensorFlow on Spark: the trainer's error, or the `spark_default` connection (master)",
    "evaluate_model": "the evaluation reads the day's model and features: did train_model write them?",
    "register_model": "MLflow: check MLFLOW_TRACKING_URI and that its database is writable",
    "batch_predict": "Spark scoring with the champion: check the `spark_default` connection and the registry",
}


@dataclass(frozen=True)
class TaskRow:
    """One task instance of a DAG run as the metadata database holds it."""

    task_id: str
    state: str | None
    start: datetime | None
    end: datetime | None

    @property
    def finished(self) -> bool:
        """Whether the task has reached a final state."""
        return self.state in FINISHED

    def seconds(self, now: datetime) -> float | None:
        """How long the task ran (until `now` while it runs); None before it starts."""
        if self.start is None:
            return None
        return max(0.0, ((self.end or now) - self.start).total_seconds())


def as_utc(value: Any) -> datetime | None:
    """A metadata-database time (a datetime, or SQLite's text) as an aware UTC datetime."""
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def metadata_db_url(env: Mapping[str, str]) -> str:
    """The SQLAlchemy URL of the Airflow metadata database an Airflow process with `env` uses."""
    return env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") or f"sqlite:///{Path(env['AIRFLOW_HOME'])}/airflow.db"


class TaskStates:
    """Reads the task instances of one DAG run (a DAG and a day) from the metadata database.

    Rows left by an earlier run of the same day (before `airflow dags test` clears them) count as not started:
    only times after `since` are this run's.
    """

    def __init__(self, db_url: str, dag_id: str, day: date, since: datetime) -> None:
        import sqlalchemy

        self._sql = sqlalchemy
        self.engine = sqlalchemy.create_engine(db_url, poolclass=sqlalchemy.pool.NullPool)
        database = self.engine.url.database if self.engine.url.get_backend_name() == "sqlite" else None
        self.sqlite_file = Path(database) if database else None
        self.dag_id, self.day, self.since = dag_id, day, since

    def read(self) -> list[TaskRow]:
        """This run's task rows, started ones first in start order; [] before the run exists or when the
        database cannot be read at this moment (locked, not migrated yet)."""
        if self.sqlite_file is not None and not self.sqlite_file.exists():
            return []  # not migrated yet; connecting would create an empty file
        query = self._sql.text(
            "SELECT ti.task_id, ti.state, ti.start_date, ti.end_date, dr.logical_date FROM task_instance ti "
            "JOIN dag_run dr ON dr.dag_id = ti.dag_id AND dr.run_id = ti.run_id WHERE ti.dag_id = :dag_id")
        try:
            with self.engine.connect() as connection:
                rows = connection.execute(query, {"dag_id": self.dag_id}).all()
        except self._sql.exc.SQLAlchemyError:
            return []
        tasks = [self._row(task_id, state, as_utc(start), as_utc(end))
                 for task_id, state, start, end, logical in rows
                 if logical is not None and as_utc(logical).date() == self.day]
        far = datetime.max.replace(tzinfo=UTC)
        return sorted(tasks, key=lambda row: (row.start or far, row.task_id))

    def _row(self, task_id: str, state: str | None, start: datetime | None, end: datetime | None) -> TaskRow:
        stale = (start is not None and start < self.since) or (start is None and end is not None and end < self.since)
        return TaskRow(task_id, None, None, None) if stale else TaskRow(task_id, state, start, end)

    def close(self) -> None:
        """Release the database engine."""
        self.engine.dispose()


@dataclass
class TaskProgress:
    """The running task's own progress, from its log lines: training steps (with an ETA) or records ingested."""

    step: int | None = None
    total_steps: int | None = None
    epoch: int | None = None
    epochs: int | None = None
    first_step: tuple[float, int] | None = None
    last_step_at: float | None = None
    records_done: int | None = None
    records_total: int | None = None
    result: str | None = None

    def feed(self, line: str, now: float) -> None:
        """Take one log line observed at monotonic time `now`."""
        if (match := TRAINING_STEP.search(line)) is not None:
            self.step, self.total_steps = int(match["step"]), int(match["total"])
            self.epoch, self.epochs = int(match["epoch"]), int(match["epochs"])
            if self.first_step is None:
                self.first_step = (now, self.step)
            self.last_step_at = now
            if self.step == self.total_steps:
                self.result = f"{self.total_steps} steps, {self.epochs} epochs, loss {float(match['loss']):.4f}"
        elif (match := INGEST_PROGRESS.search(line)) is not None:
            self.records_done, self.records_total = int(match["done"]), int(match["total"])
        elif (match := INGEST_RESULT.search(line)) is not None:
            self.result = f"{match['written']} rows written (read {match['read']}, rejected {match['rejected']})"
        elif (match := SKIP_REASON.search(line)) is not None:
            self.result = match["reason"]

    def eta_seconds(self) -> float | None:
        """Seconds left in training at the rate observed since the first step line; None until two lines."""
        if self.first_step is None or self.last_step_at is None or self.step is None or self.total_steps is None:
            return None
        started_at, first = self.first_step
        if self.step <= first or self.last_step_at <= started_at:
            return None
        rate = (self.step - first) / (self.last_step_at - started_at)
        return (self.total_steps - self.step) / rate

    def describe(self) -> str:
        """The progress as a few words ("" when the log has shown none yet)."""
        if self.step is not None:
            eta = self.eta_seconds()
            return (f"step {self.step}/{self.total_steps}, epoch {self.epoch}/{self.epochs}"
                    + (f", ETA {format_duration(eta)}" if eta is not None else ""))
        if self.records_done is not None:
            return f"{self.records_done}/{self.records_total} records"
        return ""

    def milestone(self) -> tuple[int | None, ...]:
        """What changes seldom (the quarter of training steps done): a plain log prints a progress line only when
        it changes, four at most per training (the last step is the task's success line)."""
        if self.step is None or not self.total_steps:
            return (None,)
        return (min(self.step * PLAIN_PROGRESS_LINES // self.total_steps, PLAIN_PROGRESS_LINES - 1),)


def format_duration(seconds: float) -> str:
    """`42 s`, `3 min 05 s`, `1 h 02 min`."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def task_line(day: date, row: TaskRow, now: datetime, note: str = "") -> str:
    """One task's line: day, task, state, duration, and a note (progress or result)."""
    seconds = row.seconds(now) if row.state != "upstream_failed" else None
    duration = format_duration(seconds) if seconds is not None else "-"
    return f"{day}  {row.task_id:<15} {row.state or 'waiting':<15} {duration:>12}" + (f"  {note}" if note else "")


@dataclass
class ProgressView:
    """Renders one DAG run's task rows as they change.

    On a terminal (`live`) finished tasks get a line each and the running task a single line rewritten in place,
    cut to `columns` (default: the terminal's width); otherwise (CI logs, files) a line per state change, and one
    per quarter of training.
    """

    stream: IO[str]
    live: bool
    columns: int | None = None
    day: date | None = None
    shown: dict[str, tuple[str | None, tuple]] = field(default_factory=dict)
    progress: dict[str, TaskProgress] = field(default_factory=dict)
    live_line_drawn: bool = False
    current_task: str | None = None

    def start_day(self, day: date, label: str) -> None:
        """Begin a new DAG run's block with a header line."""
        self.day, self.shown, self.progress, self.current_task = day, {}, {}, None
        self._print(label)

    def feed(self, line: str, now: float) -> None:
        """A line of the run's log (`airflow dags test` runs one task at a time and says which it starts): the
        progress of that task."""
        if (start := TASK_START.search(line)) is not None:
            self.current_task = start["task_id"]
            self.progress[self.current_task] = TaskProgress()
        elif self.current_task is not None:
            self.progress[self.current_task].feed(line, now)

    def update(self, rows: Iterable[TaskRow], now: datetime) -> None:
        """Show what changed since the last call (and redraw the live line)."""
        live_row = None
        for row in rows:
            progress = self.progress.get(row.task_id, TaskProgress())
            key = (row.state, progress.milestone() if row.state == "running" else ())
            if row.state is None or row.state in ON_THE_WAY or self.shown.get(row.task_id) == key:
                if row.state == "running":
                    live_row = row
                continue
            self.shown[row.task_id] = key
            if row.finished:
                note = (progress.result or "") if row.state in ("success", "skipped") else ""
                self._print(task_line(self.day, row, now, note))
            elif row.state == "running":
                live_row = row
                if not self.live:
                    self._print(task_line(self.day, row, now, progress.describe()))
            elif not self.live:
                self._print(task_line(self.day, row, now))
        if self.live and live_row is not None:
            note = self.progress.get(live_row.task_id, TaskProgress()).describe()
            width = (self.columns or shutil.get_terminal_size((120, 24)).columns) - 1
            self.stream.write("\r\x1b[K" + task_line(self.day, live_row, now, note)[:width])
            self.stream.flush()
            self.live_line_drawn = True

    def finish(self) -> None:
        """Clear the live line, so what follows starts on a clean line."""
        if self.live_line_drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.live_line_drawn = False

    def _print(self, text: str) -> None:
        self.finish()
        self.stream.write(text + "\n")
        self.stream.flush()


def meaningful_error_lines(lines: Iterable[str], limit: int = ERROR_LINE_LIMIT) -> list[str]:
    """The last `limit` distinct lines of a log that say what went wrong: error-level messages and exception
    lines (Python's and Java's, `Caused by:` too), without stack frames or timestamps."""
    picked: list[str] = []
    for raw in lines:
        message, level = raw.rstrip("\n"), ""
        if (structured := STRUCTURED_LINE.match(message)) is not None:
            message, level = structured["message"], structured["level"].lower()
        if (spark := SPARK_LINE.match(message)) is not None:
            message, level = spark["message"], spark["level"].lower()
        message = message.strip()
        if not message or NOISE.match(message):
            continue
        if level in ("error", "critical", "fatal") or EXCEPTION_LINE.match(message):
            message = message[:LINE_WIDTH_LIMIT]
            if message in picked:
                picked.remove(message)
            picked.append(message)
    return picked[-limit:]


def failure_report(day: date, rows: list[TaskRow], log_path: Path, log_lines: list[str]) -> str:
    """What `lakeloop run` prints when a day fails: the day and failed task, the error lines, the log, a hint."""
    failed = [row.task_id for row in rows if row.state == "failed"] or [
        row.task_id for row in rows if row.state in FAILED]
    task = failed[0] if failed else None
    errors = meaningful_error_lines(log_lines) or ["(no error line found in the log: read it whole)"]
    matched = [hint for pattern, hint in ERROR_HINTS if any(pattern.search(line) for line in errors)]
    hint = matched[0] if matched else HINTS.get(task or "", "read the log from its end")
    return "\n".join([
        f"FAILED: {day}, task {task or '(none failed: the DAG run itself failed)'}",
        "last error lines:",
        *(f"  {line}" for line in errors),
        f"full log: {log_path}",
        f"what to try: {hint}; see {FAILURE_HINTS_DOC}",
        "rerun the day with `lakeloop run --days 1 --end-date "
        f"{day}` (add --verbose to see every log line)",
    ])
