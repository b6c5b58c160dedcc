"""`lakeloop run` end to end, as a user sees it: a real day of the DAG (embedded broker, Airflow `dags test`, Spark,
TensorFlow, MLflow) on a MovieLens slice with its output captured, then a day whose Spark master is unusable. One
successful run for the whole module (it takes minutes)."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from lakeloop.airflow_env import airflow_environment, start_mlflow_ui, stop_process_groups
from lakeloop.config import load_settings
from lakeloop.lake import Lake
from lakeloop.models import EVALUATION
from lakeloop.services import free_port, port_open

pytestmark = pytest.mark.slow

DAY = date(2026, 11, 20)
EVENTS = 5_000
FAILING_DAY = date(2026, 11, 21)
TASKS = ["ingest_ratings", "spark_etl", "spark_features", "train_model", "evaluate_model", "register_model",
         "batch_predict"]
LONG_TASKS = TASKS[:4]  # seconds at least: the 1 s poll sees them running
LAKELOOP = str(Path(sys.executable).parent / "lakeloop")
DURATION = r"(\d+ s|\d+ min \d\d s|\d+ h \d\d min)"
CUDA_NOISE = re.compile(r"E0000|cuInit|cuda_platform")


@dataclass
class Run:
    """A finished `lakeloop run`: exit status, what it printed, and its environment."""

    returncode: int
    stdout: str
    stderr: str
    env: dict[str, str]


def project_environment(state: Path) -> dict[str, str]:
    """The environment a user's shell would have: none of the suite's Airflow or TensorFlow settings, a state
    directory and broker port of this module, no task retries (a failed task fails the day at once)."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("AIRFLOW", "LAKELOOP_", "MLFLOW_")) and key not in ("TF_CPP_MIN_LOG_LEVEL",)}
    env.update(LAKELOOP_STATE_DIR=str(state), LAKELOOP_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
               LAKELOOP_TASK_RETRIES="0", LAKELOOP_MLFLOW_UI_URL=f"http://127.0.0.1:{free_port()}")
    return env


def lakeloop(env: dict[str, str], *args: str) -> Run:
    """Run the `lakeloop` command, output captured (so not a terminal: one line per task state change)."""
    completed = subprocess.run([LAKELOOP, *args], env=env, capture_output=True, text=True, check=False)
    return Run(completed.returncode, completed.stdout, completed.stderr, env)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's state directory; the broker a run started there is stopped afterwards."""
    directory = tmp_path_factory.mktemp("lakeloop-run")
    yield directory
    subprocess.run([LAKELOOP, "services", "down"], env=project_environment(directory), check=False,
                   capture_output=True)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first EVENTS ratings of the MovieLens 100K `make setup` fetched, with its whole catalog, in the same
    (RecBole) files: what a user's small data set looks like to `--dataset-dir`. A day of 100K events takes minutes
    longer and shows nothing more."""
    source, directory = load_settings({}).dataset_dir, tmp_path_factory.mktemp("ml-slice")
    with (source / "ml-100k.inter").open() as ratings:
        (directory / "ml-100k.inter").write_text("".join(itertools.islice(ratings, EVENTS + 1)))
    shutil.copy(source / "ml-100k.item", directory / "ml-100k.item")
    return directory


@pytest.fixture(scope="module")
def successful_run(state: Path, dataset_dir: Path) -> Run:
    """One day of `lakeloop run` on the MovieLens slice."""
    env = project_environment(state)
    return lakeloop(env, "run", "--days", "1", "--end-date", DAY.isoformat(), "--dataset-dir", str(dataset_dir))


@pytest.fixture(scope="module")
def failed_run(successful_run: Run, dataset_dir: Path) -> Run:
    """The next day, with a `spark_default` connection whose master Spark refuses: spark_etl fails."""
    env = {**successful_run.env, "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark",
                                                                           "host": "nowhere://spark-master"})}
    return lakeloop(env, "run", "--days", "1", "--end-date", FAILING_DAY.isoformat(), "--dataset-dir", str(dataset_dir))


def log_directory(run: Run) -> Path:
    """The directory the run said holds every task's log."""
    match = re.search(r"every task's log in (\S+)", run.stdout)
    assert match, run.stdout
    return Path(match[1])


def test_the_run_shows_each_task_of_the_day_with_its_state_and_duration(successful_run):
    assert successful_run.returncode == 0, successful_run.stderr + successful_run.stdout[-3000:]
    lines = successful_run.stdout.splitlines()
    assert "--- day 1/1: 2026-11-20 ---" in lines
    for task in LONG_TASKS:
        assert any(re.fullmatch(rf"2026-11-20  {task} +running +{DURATION}.*", line) for line in lines), task
    for task in TASKS:
        assert any(re.fullmatch(rf"2026-11-20  {task} +(success|skipped) +{DURATION}.*", line) for line in lines), (
            task, successful_run.stdout)
    assert re.search(rf"2026-11-20  ingest_ratings +success +.*  {EVENTS} rows written \(read {EVENTS}, rejected 0\)",
                     successful_run.stdout)
    training = [line for line in lines if re.match(r"2026-11-20  train_model +running", line)]
    assert any(re.search(r"step \d+/\d+, epoch \d+/\d+", line) for line in training), training
    assert successful_run.stderr == ""


def test_nothing_but_progress_and_the_summary_reaches_the_terminal(successful_run):
    output = successful_run.stdout + successful_run.stderr
    assert not CUDA_NOISE.search(output)
    assert "[info" not in output and "INFO" not in output and "SparkContext" not in output
    assert len(output.splitlines()) < 60, output


def test_every_task_log_is_in_the_file_named_and_holds_no_cuda_error(successful_run):
    day_log = (log_directory(successful_run) / "2026-11-20.log").read_text()
    for task in TASKS:
        assert f"[DAG TEST] starting task_id={task}" in day_log
    assert re.search(r"tfspark\[rank 0\] INFO rank 0 step \d+/\d+ epoch", day_log)
    assert not CUDA_NOISE.search(day_log), "TensorFlow in a task (a spark-submit child too) probed for CUDA"
    own_log = (log_directory(successful_run) / "lakeloop.log").read_text()
    assert f"lakeloop.replay: {EVENTS} events published to ratings and acknowledged" in own_log


def test_the_summary_shows_the_scorers_the_gate_used_and_its_reason(successful_run, state):
    lake = Lake.from_url((state / "lake").as_uri())
    evaluation = lake.read_json(f"{lake.partition('models/lakeloop-fm', DAY)}/{EVALUATION}")
    summary = successful_run.stdout[successful_run.stdout.index("lakeloop summary"):].splitlines()
    assert summary[1] == f"2026-11-20  ingested {EVENTS} (read {EVENTS}, rejected 0)"
    assert re.fullmatch(r"  scorer +RMSE +NDCG@10", summary[2])
    assert re.fullmatch(rf"  model +{evaluation['rmse']:.4f} +{evaluation['ndcg_at_10']:.4f}", summary[3])
    bias_baseline = (rf"  bias baseline +{evaluation['bias_baseline_rmse']:.4f} +"
                     rf"{evaluation['bias_baseline_ndcg_at_10']:.4f}")
    assert any(re.fullmatch(bias_baseline, line) for line in summary), summary
    assert f"(@{evaluation['gate']['alias']}): {evaluation['gate']['reason']}" in successful_run.stdout
    assert re.search(r"  registered: lakeloop-fm v1 @(champion|challenger)", successful_run.stdout)


def test_summary_json_gives_the_same_with_the_mlflow_run_url_when_a_server_runs(successful_run, state):
    env = successful_run.env
    mlflow_ui = start_mlflow_ui(airflow_environment(load_settings(env), base=env))
    try:
        port = int(env["LAKELOOP_MLFLOW_UI_URL"].rsplit(":", 1)[1])
        while not port_open("127.0.0.1", port):
            assert mlflow_ui.poll() is None, "the MLflow UI exited"
            time.sleep(1)
        summary = lakeloop(env, "summary", "--json", "--days", "1", "--end-date", DAY.isoformat())
    finally:
        stop_process_groups([mlflow_ui])
    assert summary.returncode == 0, summary.stderr
    day = json.loads(summary.stdout)[DAY.isoformat()]
    assert set(day["scorers"]) >= {"model", "bias baseline"}
    assert day["gate"]["reason"] in successful_run.stdout
    run_id = day["registration"]["run_id"]
    assert re.fullmatch(rf"{env['LAKELOOP_MLFLOW_UI_URL']}/#/experiments/\d+/runs/{run_id}", day["mlflow_run_url"])


def test_a_failing_day_is_reported_with_its_task_the_errors_the_log_and_a_hint(failed_run):
    assert failed_run.returncode == 1
    lines = failed_run.stdout.splitlines()
    assert re.search(rf"2026-11-21  spark_etl +failed +{DURATION}", failed_run.stdout), failed_run.stdout
    assert re.search(r"2026-11-21  train_model +upstream_failed +-", failed_run.stdout)
    assert "lakeloop summary" not in failed_run.stdout
    report = failed_run.stderr
    assert report.startswith("FAILED: 2026-11-21, task spark_etl\nlast error lines:\n"), report
    assert "Master must either be yarn or start with spark, k8s, or local" in report
    assert not re.search(r"^\s+at [\w.$]+\(", report, re.MULTILINE), "no Java stack frames"
    assert len(report.splitlines()) <= 14
    day_log = log_directory(failed_run) / "2026-11-21.log"
    assert f"full log: {day_log}" in report and "Master must either be" in day_log.read_text()
    assert "what to try: Spark cannot use the master of the `spark_default` connection" in report
    assert "docs/operations.md#when-lakeloop-run-fails" in report
    assert len(lines) < 30, failed_run.stdout
