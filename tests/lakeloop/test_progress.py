"""`lakeloop run`'s progress view and failure report, on log lines captured from real `airflow dags test` runs and
task rows as the metadata database holds them (no Airflow runs here; tests/lakeloop/test_run_e2e.py runs it)."""

from __future__ import annotations

import io
import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from lakeloop.progress import (
    ProgressView,
    TaskProgress,
    TaskRow,
    TaskStates,
    failure_report,
    format_duration,
    meaningful_error_lines,
)

DAY = date(2026, 11, 20)
T0 = datetime(2026, 12, 3, 6, 40, tzinfo=UTC)
HOOK = "[airflow.task.hooks.airflow.providers.apache.spark.hooks.spark_submit.SparkSubmitHook] loc=spark_submit.py:965"


def structured(message: str, level: str = "info", logger: str = "airflow.sdk.definitions.dag") -> str:
    """A line as `airflow dags test` prints it."""
    return f"2026-12-03T06:41:56.391247Z [{level:<9}] {message} [{logger}] loc=dag.py:1501\n"


def relayed(text: str) -> str:
    """A line of a spark-submit child as the SparkSubmitHook relays it into the task log."""
    return f"2026-12-03T07:10:40.000000Z [info     ] {text} {HOOK}\n"


def step_line(step: int, total: int = 400, epoch: int = 1, epochs: int = 4) -> str:
    """A tfspark chief's training line as the SparkSubmitHook relays it into the task log."""
    return (f"2026-12-03T06:43:10.000000Z [info     ] 2026-12-03 06:43:10,000 tfspark[rank 0] INFO rank 0 step "
            f"{step}/{total} epoch {epoch}/{epochs} loss 1.04321 examples/s 9120 ETA 30 s {HOOK}\n")


def test_training_lines_give_steps_epochs_and_an_eta_from_the_observed_rate():
    progress = TaskProgress()
    assert progress.describe() == ""
    progress.feed(step_line(100), now=50.0)
    assert progress.describe() == "step 100/400, epoch 1/4"
    progress.feed(step_line(200, epoch=2), now=60.0)
    assert progress.describe() == "step 200/400, epoch 2/4, ETA 20 s"
    progress.feed(step_line(400, epoch=4), now=80.0)
    assert progress.result == "400 steps, 4 epochs, loss 1.0432"


def test_ingestion_lines_give_records_done_and_the_counts():
    progress = TaskProgress()
    progress.feed(structured("ratings[0]: offset 5120 of [0, 100000); 5120/100000 records of the slice done, "
                             "5000 records/s", logger="lakeloop.ingest.interval"), now=1.0)
    assert progress.describe() == "5120/100000 records"
    progress.feed(structured("ratings for 2026-11-20: read 100000, written 99998, rejected 2 ",
                             logger="airflow.task.operators.operators.kafka_to_lake.KafkaToLakeOperator"), now=2.0)
    assert progress.result == "99998 rows written (read 100000, rejected 2)"


def test_durations_read_as_a_person_would_say_them():
    assert [format_duration(s) for s in (4.4, 59.6, 125, 3725)] == ["4 s", "1 min 00 s", "2 min 05 s", "1 h 02 min"]


def rows(*states: tuple[str, str | None, int | None, int | None]) -> list[TaskRow]:
    """Task rows from (task, state, start second, end second) after T0."""
    def at(second: int | None) -> datetime | None:
        return None if second is None else T0 + timedelta(seconds=second)

    return [TaskRow(task, state, at(start), at(end)) for task, state, start, end in states]


def test_a_plain_stream_gets_one_line_per_state_change_with_day_task_state_and_duration():
    out = io.StringIO()
    view = ProgressView(out, live=False)
    view.start_day(DAY, "--- day 1/1: 2026-11-20 ---")
    waiting = ("spark_etl", None, None, None)
    view.update(rows(("ingest_ratings", None, None, None), waiting), T0)
    view.update(rows(("ingest_ratings", "running", 0, None), waiting), T0 + timedelta(seconds=3))
    view.feed(structured("[DAG TEST] starting task_id=ingest_ratings map_index=-1"), now=1.0)
    view.feed(structured("ratings for 2026-11-20: read 10, written 10, rejected 0"), now=2.0)
    view.update(rows(("ingest_ratings", "running", 0, None), waiting), T0 + timedelta(seconds=4))
    view.update(rows(("ingest_ratings", "success", 0, 11), ("spark_etl", "running", 12, None)),
                T0 + timedelta(seconds=13))
    view.feed(structured("[DAG TEST] starting task_id=spark_etl map_index=-1"), now=3.0)
    view.update(rows(("ingest_ratings", "success", 0, 11), ("spark_etl", "failed", 12, 75),
                     ("spark_features", "upstream_failed", None, 76)), T0 + timedelta(seconds=80))

    assert out.getvalue().splitlines() == [
        "--- day 1/1: 2026-11-20 ---",
        "2026-11-20  ingest_ratings  running                  3 s",
        "2026-11-20  ingest_ratings  success                 11 s  10 rows written (read 10, rejected 0)",
        "2026-11-20  spark_etl       running                  1 s",
        "2026-11-20  spark_etl       failed            1 min 03 s",
        "2026-11-20  spark_features  upstream_failed            -",
    ]


def test_a_plain_stream_gets_a_training_line_per_quarter_of_the_steps_not_per_step():
    out = io.StringIO()
    view = ProgressView(out, live=False)
    view.start_day(DAY, "day")
    view.feed(structured("[DAG TEST] starting task_id=train_model map_index=-1"), now=0.0)
    running = rows(("train_model", "running", 0, None))
    view.update(running, T0)
    for second, step in enumerate(range(20, 401, 20), 1):
        view.feed(step_line(step, epoch=step // 100 + 1), now=float(second))
        view.update(running, T0 + timedelta(seconds=second))

    training_lines = [line for line in out.getvalue().splitlines() if "train_model" in line]
    endings = ["running                  0 s", "1 s  step 20/400, epoch 1/4", "5 s  step 100/400, epoch 2/4, ETA 15 s",
               "10 s  step 200/400, epoch 3/4, ETA 10 s", "15 s  step 300/400, epoch 4/4, ETA 5 s"]
    assert len(training_lines) == len(endings), training_lines
    assert all(line.endswith(ending) for line, ending in zip(training_lines, endings, strict=True)), training_lines


def test_a_terminal_gets_finished_lines_and_one_live_line_rewritten_in_place():
    out = io.StringIO()
    view = ProgressView(out, live=True, columns=120)
    view.start_day(DAY, "--- day 1/1: 2026-11-20 ---")
    view.feed(structured("[DAG TEST] starting task_id=train_model map_index=-1"), now=0.0)
    for second in (1, 2):
        view.feed(step_line(100 * second), now=float(second))
        view.update(rows(("ingest_ratings", "success", 0, 11), ("train_model", "running", 20, None)),
                    T0 + timedelta(seconds=20 + second))
    view.update(rows(("ingest_ratings", "success", 0, 11), ("train_model", "success", 20, 40)),
                T0 + timedelta(seconds=41))

    text = out.getvalue()
    assert text.count("\r\x1b[K2026-11-20  train_model     running") == 2
    assert "step 200/400, epoch 1/4, ETA 2 s" in text
    final = [line.split("\r\x1b[K")[-1] for line in text.split("\n") if line]
    assert final == ["--- day 1/1: 2026-11-20 ---", "2026-11-20  ingest_ratings  success                 11 s",
                     "2026-11-20  train_model     success                 20 s"]


# The end of a real failed day's log: spark_etl against a Spark master nobody serves.
FAILED_LOG = [
    structured("[DAG TEST] starting task_id=spark_etl map_index=-1"),
    relayed("26/12/03 07:10:01 INFO SparkContext: Running Spark version 4.2.0"),
    relayed("26/12/03 07:10:40 WARN StandaloneAppClient$ClientEndpoint: Failed to connect to master 127.0.0.1:7"),
    relayed("org.apache.spark.SparkException: Exception thrown in awaitResult:"),
    relayed("\tat org.apache.spark.util.SparkThreadUtils$.awaitResult(SparkThreadUtils.scala:56)"),
    relayed("Caused by: java.io.IOException: Failed to connect to /127.0.0.1:7"),
    relayed("\t... 4 more"),
    relayed("26/12/03 07:11:00 ERROR SparkContext: Error initializing SparkContext."),
    structured("Task failed with exception", level="error", logger="task"),
    "AirflowException: Cannot execute: spark-submit --master spark://127.0.0.1:7 --name lakeloop-etl jobs/etl.py. "
    "Error code is: 1.\n",
    '  File "/work/main/.venv/lib/python3.11/site-packages/airflow/sdk/execution_time/task_runner.py", line 1\n',
    structured("Marking task as FAILED.", logger="task"),
]


def test_error_lines_keep_what_went_wrong_and_drop_stack_frames():
    lines = meaningful_error_lines(FAILED_LOG)
    assert lines == [
        "org.apache.spark.SparkException: Exception thrown in awaitResult:",
        "Caused by: java.io.IOException: Failed to connect to /127.0.0.1:7",
        "SparkContext: Error initializing SparkContext.",
        "Task failed with exception",
        "AirflowException: Cannot execute: spark-submit --master spark://127.0.0.1:7 --name lakeloop-etl "
        "jobs/etl.py. Error code is: 1.",
    ]
    assert meaningful_error_lines(FAILED_LOG, limit=2) == lines[-2:]


def test_a_failure_report_names_the_day_the_task_the_errors_the_log_and_what_to_try(tmp_path: Path):
    log = tmp_path / "2026-11-20.log"
    report = failure_report(DAY, rows(("ingest_ratings", "success", 0, 11), ("spark_etl", "failed", 12, 75),
                                      ("spark_features", "upstream_failed", None, 76)), log, FAILED_LOG)
    assert report.startswith("FAILED: 2026-11-20, task spark_etl\nlast error lines:\n  org.apache.spark")
    assert f"full log: {log}" in report
    assert "what to try: " in report and "docs/operations.md#when-lakeloop-run-fails" in report
    assert "\tat " not in report and "File \"" not in report


def test_task_states_are_this_runs_rows_of_the_day(tmp_path: Path):
    database = tmp_path / "airflow.db"
    with sqlite3.connect(database) as connection:
        connection.executescript(
            "CREATE TABLE dag_run (dag_id TEXT, run_id TEXT, logical_date TIMESTAMP);"
            "CREATE TABLE task_instance (dag_id TEXT, run_id TEXT, task_id TEXT, state TEXT, start_date TIMESTAMP,"
            " end_date TIMESTAMP);"
            "INSERT INTO dag_run VALUES ('daily_retrain', 'r20', '2026-11-20 00:00:00.000000'),"
            " ('daily_retrain', 'r21', '2026-11-21 00:00:00.000000'), ('other', 'o20', '2026-11-20 00:00:00.000000');"
            "INSERT INTO task_instance VALUES"
            " ('daily_retrain', 'r20', 'spark_etl', 'running', '2026-12-03 06:41:00.000000', NULL),"
            " ('daily_retrain', 'r20', 'ingest_ratings', 'success', '2026-12-03 06:40:10.000000',"
            "  '2026-12-03 06:40:50.000000'),"
            " ('daily_retrain', 'r20', 'train_model', 'success', '2026-12-02 06:00:00.000000',"
            "  '2026-12-02 06:10:00.000000'),"
            " ('daily_retrain', 'r20', 'batch_predict', NULL, NULL, NULL),"
            " ('daily_retrain', 'r21', 'ingest_ratings', 'running', '2026-12-03 06:40:00.000000', NULL),"
            " ('other', 'o20', 'ingest_ratings', 'running', '2026-12-03 06:40:00.000000', NULL);")
    states = TaskStates(f"sqlite:///{database}", "daily_retrain", DAY, since=T0)
    try:
        found = states.read()
    finally:
        states.close()
    assert [(row.task_id, row.state) for row in found] == [
        ("ingest_ratings", "success"), ("spark_etl", "running"), ("batch_predict", None), ("train_model", None)]
    assert found[0].seconds(T0) == 40.0


def test_task_states_before_the_database_exists_are_none_yet(tmp_path: Path):
    states = TaskStates(f"sqlite:///{tmp_path / 'not-yet' / 'airflow.db'}", "daily_retrain", DAY, since=T0)
    assert states.read() == []
    assert not (tmp_path / "not-yet").exists()


def test_a_skipped_task_says_why():
    progress = TaskProgress()
    progress.feed("2026-12-03T06:46:00.968496Z [info     ] Skipping task.                 [task] "
                  "loc=task_runner.py:1622 reason='no champion version of lakeloop-fm in the registry: nothing to "
                  "score with, so no predictions and no Asset event'\n", now=1.0)
    assert progress.result == ("no champion version of lakeloop-fm in the registry: nothing to score with, so no "
                               "predictions and no Asset event")


def test_the_hint_follows_the_cause_an_error_line_names_before_the_task():
    lines = [relayed('Exception in thread "main" org.apache.spark.SparkException: Master must either be yarn or start '
                     "with spark, k8s, or local")]
    assert meaningful_error_lines(lines) == [
        'Exception in thread "main" org.apache.spark.SparkException: Master must either be yarn or start with spark, '
        "k8s, or local"]
    report = failure_report(DAY, rows(("spark_features", "failed", 0, 9)), Path("day.log"), lines)
    assert "what to try: Spark cannot use the master of the `spark_default` connection" in report


def test_the_live_line_is_cut_to_the_terminals_width():
    out = io.StringIO()
    view = ProgressView(out, live=True, columns=40)
    view.start_day(DAY, "--- day 1/1: 2026-11-20 ---")
    view.feed(structured("[DAG TEST] starting task_id=train_model map_index=-1"), now=0.0)
    view.feed(step_line(100), now=1.0)
    view.update(rows(("train_model", "running", 20, None)), T0 + timedelta(seconds=21))

    live = out.getvalue().split("\r\x1b[K")[-1]
    assert live.startswith("2026-11-20  train_model")
    assert len(live) == 39
