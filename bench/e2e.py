"""End to end: one daily DAG run per day size (100K, 1M, 10M events), each on a fresh deployment of its own, every task
timed and every process's peak RSS sampled; prints the table and the per-event cost ratios (goal, 10M vs 1M: ≤ 1.2),
writes `var/bench-e2e/results.json` and a log-log plot, `bench/results/e2e_scaling.png`.

    make bench-e2e                                            # 100K, 1M and 10M
    .venv/bin/python -m bench.e2e --sizes 100000,1000000

See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bench.harness import parse_sizes, table_header, table_row
from lakeloop.cli import DAG_ID
from lakeloop.config import PROJECT_DIR, Settings, load_settings

if TYPE_CHECKING:
    from lakeloop.movielens import MovieLens

DAY = date(2026, 11, 20)
DEFAULT_SIZES = "100000,1000000,10000000"
RESULTS_DIR = PROJECT_DIR / "var" / "bench-e2e"
PLOT_PATH = PROJECT_DIR / "bench" / "results" / "e2e_scaling.png"
SAMPLE_SECONDS = 0.5
COST_RATIO_GOAL = 1.2  # per-event cost at 10M vs 1M
MIB = 1 << 20
REPLAY_PARTITIONS = 3  # lakeloop.replay.ensure_topic's default
SCORING_TASK = "batch_predict"


@dataclass
class ProcessPeak:
    """The largest RSS one process reached, what it was and when."""

    rss_mib: float = 0.0
    pid: int | None = None
    command: str = ""
    at: float = 0.0  # epoch seconds
    task_id: str | None = None


@dataclass
class TaskTiming:
    """One task instance of the run, from the metadata database."""

    task_id: str
    state: str | None
    seconds: float | None
    start: float | None  # epoch seconds
    end: float | None
    peak: ProcessPeak | None = None  # the largest process sampled while the task ran

    @property
    def completed(self) -> bool:
        """Whether the task did its part of the day: it succeeded, or it is `batch_predict` skipped because the
        registry had no champion to score with (the gate kept the day's model out)."""
        return self.state == "success" or (self.task_id == SCORING_TASK and self.state == "skipped")


@dataclass
class SizeResult:
    """Everything measured for one day size."""

    events: int
    users: int
    generate_seconds: float
    publish_seconds: float
    returncode: int | None
    tasks: list[TaskTiming]
    peak: ProcessPeak
    broker_peak_mib: float
    state_dir: str
    measured_at: str
    failure: str | None = None
    notes: list[str] = field(default_factory=list)
    gate: dict | None = None  # the day's RMSE, the bias baseline's, and whether the model became the champion
    scoring: TaskTiming | None = None  # batch_predict rerun with the day's model when the gate kept it out

    @property
    def dag_seconds(self) -> float | None:
        """Wall seconds from the first task's start to the last task's end (None if no task ran)."""
        starts = [t.start for t in self.tasks if t.start is not None]
        ends = [t.end for t in self.tasks if t.end is not None]
        return max(ends) - min(starts) if starts and ends else None

    @property
    def replaced_scoring(self) -> tuple[TaskTiming, TaskTiming] | None:
        """(the DAG's `batch_predict`, `scoring`) when a successful `scoring` stands in for the DAG's task."""
        skipped = next((t for t in self.tasks if t.task_id == SCORING_TASK and t.completed and t.seconds), None)
        if skipped is None or self.scoring is None or self.scoring.state != "success":
            return None
        return skipped, self.scoring

    @property
    def scored_dag_seconds(self) -> float | None:
        """`dag_seconds` with the day's model's scoring (`scoring`) in place of a `batch_predict` that had no
        champion to score with: what the day costs the whole loop."""
        if self.dag_seconds is None or self.replaced_scoring is None:
            return self.dag_seconds
        skipped, scoring = self.replaced_scoring
        return self.dag_seconds - skipped.seconds + scoring.seconds

    def task_seconds(self) -> dict[str, float]:
        """Seconds of each task that succeeded, `batch_predict`'s from `scoring` where there is one."""
        seconds = {t.task_id: t.seconds for t in self.tasks if t.completed}
        if self.replaced_scoring is not None:
            seconds[SCORING_TASK] = self.scoring.seconds
        return seconds

    @property
    def succeeded(self) -> bool:
        """Whether the DAG run did its day: every task completed (`TaskTiming.completed`)."""
        return self.returncode == 0 and bool(self.tasks) and all(t.completed for t in self.tasks)

    def to_json(self) -> dict:
        """The result as a JSON object, with the derived figures."""
        return {**asdict(self), "dag_seconds": self.dag_seconds, "succeeded": self.succeeded}

    @classmethod
    def from_json(cls, payload: dict) -> SizeResult:
        """A result written by `to_json`."""
        fields = {key: value for key, value in payload.items() if key not in ("dag_seconds", "succeeded")}
        fields["scoring"] = _task_from_json(fields["scoring"]) if fields.get("scoring") else None
        tasks = [_task_from_json(task) for task in fields.pop("tasks")]
        peak = ProcessPeak(**fields.pop("peak"))
        return cls(**fields, tasks=tasks, peak=peak)


def _task_from_json(payload: dict) -> TaskTiming:
    return TaskTiming(**{**payload, "peak": ProcessPeak(**payload["peak"]) if payload["peak"] else None})


class RssSampler(threading.Thread):
    """Samples, every `SAMPLE_SECONDS`, the RSS of a process tree (keeping each sample's largest process) and the
    largest process of the broker's tree (not in the first)."""

    def __init__(self, root_pid: int, broker_pid: int | None) -> None:
        super().__init__(daemon=True)
        self.root_pid = root_pid
        self.broker_pid = broker_pid
        self.samples: list[ProcessPeak] = []
        self.broker_peak_mib = 0.0
        self._stop_event = threading.Event()

    def stop(self) -> None:
        """Stop sampling and wait for the thread."""
        self._stop_event.set()
        self.join()

    def run(self) -> None:
        """Sample until `stop`, or until the root process is gone."""
        import psutil

        try:
            root = psutil.Process(self.root_pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop_event.wait(SAMPLE_SECONDS):
            try:
                processes = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            largest = ProcessPeak(at=time.time())
            for process in processes:
                try:
                    rss = process.memory_info().rss / MIB
                    if rss > largest.rss_mib:
                        largest = ProcessPeak(rss, process.pid, describe_process(process.cmdline()), largest.at)
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
            self.samples.append(largest)
            if self.broker_pid is not None:
                try:
                    broker = psutil.Process(self.broker_pid)
                    for process in (broker, *broker.children(recursive=True)):  # a launcher runs the server
                        self.broker_peak_mib = max(self.broker_peak_mib, process.memory_info().rss / MIB)
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    pass


def describe_process(cmdline: list[str]) -> str:
    """A short name for a sampled process: a Spark application, a Spark Python worker, an Airflow CLI, ..."""
    text = " ".join(cmdline)
    if "org.apache.spark.deploy.SparkSubmit" in text:
        name = next((arg for previous, arg in zip(cmdline, cmdline[1:], strict=False) if previous == "--name"), None)
        script = next((arg for arg in cmdline if arg.endswith(".py")), "")
        return f"spark-submit JVM ({name or Path(script).name or 'pyspark'})"
    if "pyspark.daemon" in text or "pyspark.worker" in text:
        return "Spark Python worker"
    if "airflow" in text and "dags" in text:
        return "airflow dags test (tasks run in it)"
    return text[:120]


def isolated_environment(state_dir: Path, bootstrap: str, topic: str) -> dict[str, str]:
    """This process's environment without Airflow/lakeloop settings, plus those of one size's own deployment."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "LAKELOOP_", "MLFLOW_"))}
    env.update({
        "LAKELOOP_STATE_DIR": str(state_dir),
        "LAKELOOP_KAFKA_BOOTSTRAP": bootstrap,
        "LAKELOOP_RATINGS_TOPIC": topic,
        "LAKELOOP_TASK_RETRIES": "0",
    })
    return env


def read_task_timings(settings: Settings, dag_id: str = DAG_ID) -> list[TaskTiming]:
    """Every task instance of `dag_id` in the settings' SQLite metadata database, in start order."""
    database = settings.airflow_home / "airflow.db"
    if not database.exists():
        return []
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        rows = connection.execute("SELECT task_id, state, start_date, end_date FROM task_instance WHERE dag_id = ?",
                                  (dag_id,)).fetchall()
    timings = []
    for task_id, state, start, end in rows:
        start_s, end_s = _epoch(start), _epoch(end)
        seconds = end_s - start_s if start_s is not None and end_s is not None else None
        timings.append(TaskTiming(task_id, state, seconds, start_s, end_s))
    return sorted(timings, key=lambda t: (t.start is None, t.start or 0.0))


def _epoch(value: str | None) -> float | None:
    if not value:
        return None
    moment = datetime.fromisoformat(value)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def attribute_peaks(samples: list[ProcessPeak], tasks: list[TaskTiming]) -> ProcessPeak:
    """Give each task the largest process sampled while it ran; return the overall peak, named by its task."""
    overall = ProcessPeak()
    for sample in samples:
        running = next((t for t in tasks if t.start is not None and t.start <= sample.at <= (t.end or float("inf"))),
                       None)
        sample.task_id = running.task_id if running else None
        if running and (running.peak is None or sample.rss_mib > running.peak.rss_mib):
            running.peak = sample
        if sample.rss_mib > overall.rss_mib:
            overall = sample
    return overall


def read_gate(settings: Settings) -> dict | None:
    """The evaluation's RMSEs and the quality gate's decision for `DAY` (None before `evaluate_model` ran)."""
    from lakeloop.models import EVALUATION, model_dir

    path = model_dir(settings.lake_path, settings.model_name, DAY) / EVALUATION
    if not path.exists():
        return None
    evaluation = json.loads(path.read_text())
    return {"rmse": evaluation["rmse"], "bias_baseline_rmse": evaluation["bias_baseline_rmse"],
            "promoted": evaluation["gate"]["promote"]}


def explain_failure(settings: Settings, result: SizeResult, output_log: Path) -> str | None:
    """Which task broke and the error its log gives; or why the run failed without a failed task."""
    if result.succeeded:
        return None
    broken = [t for t in result.tasks if t.state not in ("success", None, "upstream_failed", "skipped")]
    lines = []
    for task in broken:
        logs = sorted((settings.airflow_home / "logs").glob(f"dag_id={DAG_ID}/run_id=*/task_id={task.task_id}/*.log"))
        error = task_log_errors(logs[-1]) if logs else dags_test_errors(output_log, task.task_id)
        lines.append(f"task {task.task_id} {task.state} after {task.seconds or 0:.0f}s: {error}")
    not_run = [t.task_id for t in result.tasks if t.state in (None, "upstream_failed")]
    if not_run:
        lines.append(f"not run: {', '.join(not_run)}")
    if not broken:
        lines.append(f"`dags test` exited with {result.returncode}; its output ends:\n{tail(output_log, 15)}")
    return "\n".join(lines)


def task_log_errors(log: Path, limit: int = 6) -> str:
    """The error events of an Airflow 3 task log (JSON lines), else its last lines."""
    errors = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if str(record.get("level", "")).lower() in ("error", "critical"):
            detail = record.get("error_detail") or []
            exceptions = [f"{item.get('exc_type')}: {item.get('exc_value')}" for item in detail
                          if isinstance(item, dict)]
            errors.append(" ".join([str(record.get("event", "")), *exceptions])[:600])
    return " | ".join(errors[-limit:]) if errors else f"(log {log}) ends:\n{tail(log, 10)}"


def dags_test_errors(output_log: Path, task_id: str, limit: int = 8) -> str:
    """The error lines `dags test` printed while `task_id` ran (it writes no task log files), else its last lines."""
    lines = output_log.read_text(errors="replace").splitlines() if output_log.exists() else []
    starts = [n for n, line in enumerate(lines) if f"[DAG TEST] starting task_id={task_id} " in line]
    section = lines[starts[-1]:] if starts else lines
    ends = [n for n, line in enumerate(section) if f"[DAG TEST] end task task_id={task_id} " in line]
    section = section[:ends[0] + 1] if ends else section
    errors = [line[:400] for line in section if "[error" in line or "Error" in line or "Killed" in line]
    return "\n".join(errors[-limit:]) if errors else "\n".join(line[:400] for line in section[-limit:])


def tail(path: Path, lines: int) -> str:
    """The last `lines` lines of a text file."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def topic_partitions(events: int) -> int:
    """Partitions of a day's topic: replay's 3 at every size, like the topic `make run` replays into.

    The ingestion reads one partition at a time in fetches of at most `max_partition_fetch_bytes` (4 MiB), which
    the embedded Apache Kafka broker honours, so what it holds does not grow with a partition's size; 10M events
    (~1.2 GB of JSON, ~380 MB a partition) stay well within what one Kafka partition takes. (noida-db, the
    embedded broker before, answered a fetch with the partition's whole log, so the bench needed a partition per
    500k events to keep responses under kafka-python's 100 MB frame limit.)
    """
    return REPLAY_PARTITIONS


def run_size(events: int, movielens: MovieLens, root: Path, timeout_s: float) -> SizeResult:
    """Generate, publish and run the DAG for one day of `events` events in a fresh state dir under `root`."""
    import pyarrow.compute as pc

    from bench.support.synthetic_events import generate_events
    from lakeloop.replay import ensure_topic, replay
    from lakeloop.services import EmbeddedBroker, free_port

    state_dir = root / str(events)
    shutil.rmtree(state_dir, ignore_errors=True)
    state_dir.mkdir(parents=True)
    port = free_port()
    env = isolated_environment(state_dir, f"127.0.0.1:{port}", f"ratings-e2e-{events}")
    settings = load_settings(env)
    broker = EmbeddedBroker(state_dir=settings.broker_dir, port=port)
    settings.broker_dir.mkdir(parents=True)
    broker.start()
    try:
        started = time.perf_counter()
        table = generate_events(movielens, events, DAY)
        users = pc.count_distinct(table["user_id"]).as_py()
        generated = time.perf_counter()
        print(f"[{events:,}] generated {table.num_rows:,} events of {users:,} users in {generated - started:.1f}s; "
              f"publishing to {settings.kafka_bootstrap} topic {settings.ratings_topic}", flush=True)
        ensure_topic(settings.kafka_bootstrap, settings.ratings_topic, partitions=topic_partitions(events))
        report = replay(movielens, settings.kafka_bootstrap, settings.ratings_topic, settings.lake_path, days=1,
                        end_day=DAY, events=table)
        published = time.perf_counter()
        del table
        if report.events_per_day != {DAY.isoformat(): events}:
            raise RuntimeError(f"published {report.events_per_day}, expected {events} events on {DAY}")
        print(f"[{events:,}] published in {published - generated:.1f}s; running {DAG_ID} for {DAY}", flush=True)
        output_log = state_dir / "dags_test.log"
        returncode, samples, broker_peak = _run_airflow(["dags", "test", DAG_ID, DAY.isoformat()], env, output_log,
                                                        broker.pid(), timeout_s)
        stopped = time.time()
        tasks = read_task_timings(settings)
        for task in tasks:
            if task.start is not None and task.end is None:  # still running when the run was stopped
                task.seconds = stopped - task.start
        result = SizeResult(events=events, users=users, generate_seconds=generated - started,
                            publish_seconds=published - generated, returncode=returncode, tasks=tasks,
                            peak=attribute_peaks(samples, tasks), broker_peak_mib=broker_peak,
                            state_dir=str(state_dir), measured_at=datetime.now(UTC).isoformat(timespec="seconds"))
        if returncode is None:
            result.notes.append(f"`dags test` killed after the bench's timeout of {timeout_s:.0f}s; its output "
                                f"ended:\n{tail(output_log, 3)}")
        result.failure = explain_failure(settings, result, output_log)
        result.gate = read_gate(settings)
        if result.succeeded and result.gate and not result.gate["promoted"]:
            print(f"[{events:,}] the gate kept the day's model out: {SCORING_TASK} once more with it", flush=True)
            result.scoring = score_with_the_days_model(env, settings, state_dir / "scoring.log", timeout_s)
        return result
    finally:
        broker.stop()


def score_with_the_days_model(env: dict[str, str], settings: Settings, output_log: Path,
                              timeout_s: float) -> TaskTiming:
    """`batch_predict` run once more (`airflow tasks test`, timed like the DAG's tasks, RSS sampled) with the day's
    model aliased `champion` for the run, the alias removed after.

    A day whose model the quality gate rejects leaves the registry without a champion, so the DAG's
    `batch_predict` has nothing to score with and its seconds say nothing about scoring a day of that size.
    """
    from mlflow import MlflowClient

    from lakeloop.gate import CHALLENGER, CHAMPION

    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    version = client.get_model_version_by_alias(settings.model_name, CHALLENGER).version
    client.set_registered_model_alias(settings.model_name, CHAMPION, version)
    try:
        returncode, samples, _ = _run_airflow(["tasks", "test", DAG_ID, SCORING_TASK, DAY.isoformat()], env,
                                              output_log, None, timeout_s)
    finally:
        client.delete_registered_model_alias(settings.model_name, CHAMPION)
    scoring = next(task for task in read_task_timings(settings) if task.task_id == SCORING_TASK)
    if returncode != 0:
        scoring.state = f"failed ({returncode})"
    attribute_peaks(samples, [scoring])
    return scoring


def _run_airflow(arguments: list[str], env: dict[str, str], output_log: Path, broker_pid: int | None,
                 timeout_s: float) -> tuple[int | None, list[ProcessPeak], float]:
    """`lakeloop airflow <arguments>` with RSS sampling; its return code (None if it timed out), samples, broker
    peak."""
    lakeloop = str(Path(sys.executable).parent / "lakeloop")
    with output_log.open("wb") as output:
        process = subprocess.Popen([lakeloop, "airflow", *arguments], env=env,
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    sampler = RssSampler(process.pid, broker_pid)
    sampler.start()
    try:
        returncode = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        returncode = None
    sampler.stop()
    return returncode, sampler.samples, sampler.broker_peak_mib


def task_order(results: list[SizeResult]) -> list[str]:
    """Task ids in the order they ran, over all results (the largest run's order first)."""
    order: list[str] = []
    for result in sorted(results, key=lambda r: -len(r.tasks)):
        order += [t.task_id for t in result.tasks if t.task_id not in order]
    return order


def per_event_cost_ratios(results: list[SizeResult]) -> list[tuple[int, int, float]]:
    """(smaller, larger, ratio) of the per-event DAG cost (`scored_dag_seconds` per event) between successive
    successful sizes."""
    done = sorted((r for r in results if r.succeeded), key=lambda r: r.events)
    return [(small.events, large.events,
             (large.scored_dag_seconds / large.events) / (small.scored_dag_seconds / small.events))
            for small, large in zip(done, done[1:], strict=False)]


def format_table(results: list[SizeResult]) -> str:
    """The results as a Markdown table: events, seconds per task, DAG seconds, events/s, the peak RSS."""
    tasks = task_order(results)
    header = ["events", "users", *tasks, "DAG total s", "events/s", "peak RSS MiB (process, task)", "broker RSS MiB",
              "FM / bias RMSE"]
    lines = table_header(header, "rr" + "r" * len(tasks) + "rrlrl")
    for result in sorted(results, key=lambda r: r.events):
        by_id = {t.task_id: t for t in result.tasks}
        cells = [f"{result.events:,}", f"{result.users:,}"]
        for task_id in tasks:
            task = by_id.get(task_id)
            if task is None or task.state is None:
                cells.append("—")
            elif task.completed and task_id == SCORING_TASK and result.scoring is not None:
                scoring = result.scoring
                scored = f"{scoring.seconds:.1f}" if scoring.state == "success" else scoring.state
                cells.append(f"{task.seconds:.1f} (no champion; with the day's model {scored})")
            elif task.completed:
                cells.append(f"{task.seconds:.1f}")
            else:
                cells.append(f"{task.state} ({task.seconds or 0:.0f})")
        total = result.dag_seconds
        ok = result.succeeded
        cells.append(f"{total:.1f}" if total and ok else f"failed ({total or 0:.0f})")
        cells.append(f"{result.events / total:,.0f}" if total and ok else "—")
        peak = result.peak
        cells.append(f"{peak.rss_mib:,.0f} ({peak.command}, {peak.task_id or 'between tasks'})")
        cells.append(f"{result.broker_peak_mib:,.0f}")
        gate = result.gate
        cells.append(f"{gate['rmse']:.3f} / {gate['bias_baseline_rmse']:.3f}, "
                     f"{'champion' if gate['promoted'] else 'rejected: no predictions'}" if gate else "—")
        lines.append(table_row(cells))
    return "\n".join(lines)


def format_ratios(results: list[SizeResult]) -> str:
    """The per-event cost ratios, one line each, with the per-task ratios; for a size whose run did not finish,
    the ratios of the tasks it finished against the next smaller size."""
    by_size = {r.events: r.task_seconds() for r in results}

    def per_task(small: int, large: int) -> str:
        return ", ".join(f"{task} {(by_size[large][task] / large) / (by_size[small][task] / small):.2f}"
                         for task in task_order(results) if by_size[small].get(task) and by_size[large].get(task))

    lines = []
    for small, large, ratio in per_event_cost_ratios(results):
        goal = f" (goal ≤ {COST_RATIO_GOAL})" if (small, large) == (1_000_000, 10_000_000) else ""
        lines.append(f"per-event cost {large:,} vs {small:,}: {ratio:.2f}{goal}; per task: {per_task(small, large)}")
    scored = [f"{r.events:,}" for r in sorted(results, key=lambda r: r.events) if r.scored_dag_seconds != r.dag_seconds]
    if lines and scored:
        lines.append(f"({SCORING_TASK} at {', '.join(scored)}: the day's model scoring after the run, which had no "
                     "champion; the DAG's cost counts it in place of the skipped task)")
    done = sorted(r.events for r in results if r.succeeded)
    for result in sorted(results, key=lambda r: r.events):
        smaller = [size for size in done if size < result.events]
        if not result.succeeded and smaller and by_size[result.events]:
            lines.append(f"per-event cost {result.events:,} vs {smaller[-1]:,}: run not finished; finished tasks: "
                         f"{per_task(smaller[-1], result.events) or 'none'}")
    return "\n".join(lines)


def plot(results: list[SizeResult], path: Path) -> None:
    """Log-log plot of each task's seconds against events (tasks that succeeded) and the DAG's (runs that did)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = sorted((r for r in results if r.succeeded), key=lambda r: r.events)
    figure, axes = plt.subplots(figsize=(7.5, 5), dpi=90)
    seconds = {r.events: r.task_seconds() for r in results}
    for task_id in task_order(results):
        points = [(events, seconds[events][task_id]) for events in sorted(seconds) if seconds[events].get(task_id)]
        if points:
            label = f"{task_id} (scored with the day's model where no champion)" if task_id == SCORING_TASK else task_id
            axes.plot(*zip(*points, strict=True), marker="o", label=label)
    if done:
        axes.plot([r.events for r in done], [r.scored_dag_seconds for r in done], marker="s", color="black",
                  linewidth=2, label="DAG run")
        low = done[0]
        axes.plot([low.events, done[-1].events],
                  [low.scored_dag_seconds, low.scored_dag_seconds * done[-1].events / low.events],
                  linestyle=":", color="grey", label="linear from the smallest")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("events in the day")
    axes.set_ylabel("wall seconds")
    axes.set_title("daily_retrain: seconds per task vs day size (2 cores, 24 GiB)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def load_results(path: Path) -> dict[int, SizeResult]:
    """Earlier results by size (empty when there are none)."""
    if not path.exists():
        return {}
    return {int(size): SizeResult.from_json(payload) for size, payload in json.loads(path.read_text()).items()}


def main(argv: list[str] | None = None) -> dict[int, SizeResult]:
    """Run the sizes asked for, merge them with earlier results, print the table and ratios, write JSON and plot."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"events per day, comma-separated ({DEFAULT_SIZES})")
    parser.add_argument("--workdir", type=Path, default=RESULTS_DIR, help="state dirs and results.json (%(default)s)")
    parser.add_argument("--plot", type=Path, default=PLOT_PATH, help="the PNG (%(default)s)")
    parser.add_argument("--timeout-minutes", type=float, default=240.0, help="per DAG run (%(default)s)")
    parser.add_argument("--report-only", action="store_true", help="print and plot the saved results, run nothing")
    args = parser.parse_args(argv)

    results_path = args.workdir / "results.json"
    results = load_results(results_path)
    if not args.report_only:
        from lakeloop.movielens import load_movielens

        movielens = load_movielens(load_settings().dataset_dir)
        for events in parse_sizes(args.sizes):
            result = run_size(events, movielens, args.workdir, args.timeout_minutes * 60)
            results[events] = result
            results_path.parent.mkdir(parents=True, exist_ok=True)
            results_path.write_text(json.dumps({str(k): r.to_json() for k, r in sorted(results.items())}, indent=2))
            status = "ok" if result.succeeded else f"FAILED:\n{result.failure}"
            print(f"[{events:,}] DAG run {result.dag_seconds or 0:.1f}s, {status}", flush=True)
    for result in results.values():  # results saved before the gate was recorded
        if result.gate is None and Path(result.state_dir, "lake").exists():
            result.gate = read_gate(load_settings({"LAKELOOP_STATE_DIR": result.state_dir}))
    ordered = list(results.values())
    print(format_table(ordered))
    print(format_ratios(ordered) or "per-event cost: fewer than two successful sizes")
    for result in ordered:
        for text in filter(None, [result.failure, *result.notes]):
            print(f"{result.events:,} events: {text}")
    plot(ordered, args.plot)
    print(f"results: {results_path}\nplot: {args.plot}")
    return results


if __name__ == "__main__":
    main()
