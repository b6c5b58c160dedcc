"""`daily_retrain` under the real scheduler, on the production metadata set-up: a backfill, the UI in a browser,
and alerts for a failed run.

One Airflow deployment (API server/UI, scheduler, DAG processor, triggerer; LocalExecutor) serves the three
tests, in this order, as the compose stack runs it: Airflow's metadata database and MLflow's backend store on
PostgreSQL (a throwaway cluster on 127.0.0.1, its databases made by the stack's own `init-databases.sh`), MLflow as
a tracking server that proxies the artifacts and serves the UI. Around it: a broker of its own, a MovieLens slice
on two days whose catalog has integer `item_id`s (the events' type; the replay writes MovieLens ids as strings),
a webhook server and an SMTP server on 127.0.0.1.

1. `lakeloop airflow backfill create` runs two days through the scheduler; each day's raw partition
   holds the rows and counts the daily ingestion of that interval produces, the first day's outputs reconcile
   from Kafka to the predictions (`check_day_outputs`), each day registers its own model version and writes
   predictions, pools and per-task limits hold, the days run each task in day order (and a day is evaluated
   after the day before registered, registered after it predicted), every run that had not finished one minute
   after it was queued raised a deadline alert, and the runs, tasks, Asset events and model versions are rows
   in PostgreSQL (no SQLite fallback).
2. Headless Chromium logs in, opens the grid and follows `register_model`'s MLflow extra link.
3. With the broker stopped, a run fails for real: exactly one alert per task that exhausted its retries,
   on both servers, and none for the run itself.

(`make run`'s embedded SQLite set-up runs the same DAG with `dags test` in `tests/lakeloop/test_cli_run.py`.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from lakeloop.airflow_env import AirflowServices, airflow_environment
from lakeloop.config import Settings, load_settings
from lakeloop.ingest.interval import ingest_interval, read_manifest
from lakeloop.ingest.options import IngestOptions
from lakeloop.ingest.schema import RATINGS_SCHEMA
from lakeloop.models import EVALUATION, REGISTRATION, model_dir
from lakeloop.movielens import MovieLens
from lakeloop.names import SPARK_POOL
from lakeloop.replay import replay
from lakeloop.services import EmbeddedBroker, free_port
from tests.alert_servers import SMTPServer, WebhookServer
from tests.catalogs import with_integer_item_ids
from tests.dags.day_outputs import check_day_outputs
from tests.delta_protocol import read_day
from tests.postgres_stack import create_databases, database_url, mlflow_server

DAYS = [date(2026, 11, 19), date(2026, 11, 20)]
FAILING_DAY = date(2026, 11, 21)
EVENTS = 10_000  # 5,000 a day: the first day's model beats both baselines and becomes the champion
DAG_ID = "daily_retrain"
BIN = Path(sys.executable).parent
SPARK_TASKS = {"spark_etl", "spark_features", "batch_predict"}


@dataclass
class Deployment:
    """The running deployment and what the tests need to reach it."""

    env: dict[str, str]
    settings: Settings
    services: AirflowServices
    broker: EmbeddedBroker
    webhook: WebhookServer
    smtp: SMTPServer
    events_per_day: dict[str, int]
    postgres: object
    databases: dict[str, dict[str, str]]
    artifacts: Path

    def airflow(self, *args: str) -> str:
        """Run `lakeloop airflow ARGS` (the project's Airflow CLI) and return its output; fail on error."""
        result = subprocess.run([str(BIN / "lakeloop"), "airflow", *args], env=self.env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout

    def query(self, sql: str, *params: object) -> list[tuple]:
        """Read the Airflow metadata database (PostgreSQL)."""
        return self.postgres.execute(self.databases["airflow"]["name"], sql, params)

    def wait_for_runs(self, run_type: str, count: int, timeout_s: float) -> dict[str, str]:
        """Wait until `count` runs of `run_type` have finished; return run id → state."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            runs = dict(self.query("select run_id, state from dag_run where dag_id = %s and run_type = %s",
                                   DAG_ID, run_type))
            if len(runs) >= count and all(state in ("success", "failed") for state in runs.values()):
                return runs
            time.sleep(5)
        pytest.fail(f"{run_type} runs not finished after {timeout_s:.0f}s: {self.task_states()}")

    def task_states(self) -> list[tuple]:
        """(run id, task id, state, try number) of every task instance."""
        return self.query("select run_id, task_id, state, try_number from task_instance where dag_id = %s "
                          "order by run_id, task_id", DAG_ID)

    def task_log_tails(self, run_id: str) -> str:
        """The last lines of the failed task logs of a run, for assertion messages."""
        logs = self.settings.airflow_home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}"
        return "\n".join(f"{path}: {path.read_text()[-2000:]}" for path in sorted(logs.rglob("*.log")))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, movielens, postgres) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("scheduler")
    databases = create_databases(postgres)
    artifacts = root / "mlflow-artifacts"
    with ExitStack() as stack:
        broker = EmbeddedBroker(state_dir=root / "broker", port=free_port())
        broker.start()
        stack.callback(broker.stop)
        webhook = stack.enter_context(WebhookServer())
        smtp = stack.enter_context(SMTPServer())
        tracking_uri = stack.enter_context(mlflow_server(database_url(postgres, databases["mlflow"], "postgresql"),
                                                         artifacts))
        base = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "LAKELOOP_"))}
        base.update({
            "LAKELOOP_STATE_DIR": str(root / "state"),
            "LAKELOOP_KAFKA_BOOTSTRAP": broker.bootstrap,
            "LAKELOOP_MODEL_NAME": "scheduler-fm",
            "LAKELOOP_TASK_RETRIES": "1",
            "LAKELOOP_RETRY_DELAY_SECONDS": "1",
            "LAKELOOP_RUN_DEADLINE_MINUTES": "1",
            "LAKELOOP_ALERT_WEBHOOK": webhook.url,
            "LAKELOOP_MLFLOW_UI_URL": tracking_uri,
            "MLFLOW_TRACKING_URI": tracking_uri,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url(postgres, databases["airflow"], "postgresql+psycopg2"),
            "AIRFLOW_CONN_SMTP_DEFAULT": smtp.connection_uri_json("oncall@example.org"),
            "AIRFLOW__API__PORT": str(free_port()),
            # only the backfill and the triggered run: no catch-up of every day since the start date
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        })
        settings = load_settings(base)
        env = airflow_environment(settings, base)
        report = replay(with_integer_item_ids(MovieLens(movielens.ratings.slice(0, EVENTS), movielens.movies)),
                        settings.kafka_bootstrap, settings.ratings_topic, settings.lake_path, days=len(DAYS),
                        end_day=DAYS[-1])
        services = AirflowServices(env)
        stack.callback(services.stop, 15)  # a graceful stop takes ~40 s; nothing of it is tested
        services.start()
        services.wait_until_healthy(timeout_s=600)
        deployment = Deployment(env, settings, services, broker, webhook, smtp, report.events_per_day, postgres,
                                databases, artifacts)
        _wait_until_parsed(deployment)
        yield deployment


def _wait_until_parsed(deployment: Deployment, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not deployment.query("select 1 from serialized_dag where dag_id = %s", DAG_ID):
        assert time.monotonic() < deadline, f"{DAG_ID} not parsed after {timeout_s}s"
        time.sleep(2)


def _overlaps(intervals: list[tuple[str, str]]) -> int:
    """The largest number of [start, end) intervals open at one instant."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = current = 0
    for _, step in events:
        current += step
        most = max(most, current)
    return most


@pytest.mark.slow
@pytest.mark.timeout(4200)
def test_a_backfill_through_the_scheduler_reproduces_the_daily_outputs(deployment):
    deployment.airflow("backfill", "create", "--dag-id", DAG_ID, "--from-date", DAYS[0].isoformat(),
                       "--to-date", DAYS[-1].isoformat(), "--reprocess-behavior", "failed")
    # a hang guard, not a speed target: on a 2-core machine shared with other test runs (load ~15) three
    # days took 37 min; on a quiet one a few minutes
    runs = deployment.wait_for_runs("backfill", len(DAYS), timeout_s=3600)
    failed = [run_id for run_id, state in runs.items() if state != "success"]
    assert not failed, "\n".join(deployment.task_log_tails(run_id)[-6000:] for run_id in failed)

    lake, reference = deployment.settings.lake_path, deployment.settings.state_dir / "reference-lake"
    versions, champion = set(), None
    for day in DAYS:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        ingest_interval({"bootstrap_servers": deployment.broker.bootstrap}, deployment.settings.ratings_topic,
                        reference, start, start + timedelta(days=1), schema=RATINGS_SCHEMA, dataset="raw/ratings",
                        rejected_dataset="rejected/ratings", options=IngestOptions(commit_group_id=None))
        summary, expected_summary = (
            {key: value for key, value in read_manifest(where, "raw/ratings", day).items() if key != "table_version"}
            for where in (lake, reference))
        assert summary == expected_summary
        raw = read_day(lake / "raw/ratings", day).sort_by("event_id")
        assert raw.equals(read_day(reference / "raw/ratings", day).sort_by("event_id"))
        raw_rows = raw.num_rows
        assert raw_rows == deployment.events_per_day[day.isoformat()]
        assert read_day(lake / "curated/ratings", day).num_rows == raw_rows
        models = model_dir(lake, deployment.settings.model_name, day)
        registration = json.loads((models / REGISTRATION).read_text())
        gate = json.loads((models / EVALUATION).read_text())["gate"]
        assert registration["day"] == day.isoformat()
        assert registration["alias"] == gate["alias"] and gate["champion_version"] == champion
        versions.add(registration["version"])
        champion = registration["version"] if gate["promote"] else champion
        # at this size a day's model may fail the gate; then the previous champion (if any) predicts
        predicted = read_day(lake / "predictions", day)
        if champion is None:
            assert predicted is None
        else:
            assert set(predicted["model_version"].to_pylist()) == {champion}
    assert len(versions) == len(DAYS)
    check_day_outputs(deployment.settings, deployment.events_per_day[DAYS[0].isoformat()], DAYS[0])

    assert ("gpu_pool",) in deployment.query("select pool from slot_pool")
    predicted_days = {row[0] for row in deployment.query(
        "select r.logical_date::date from asset_event e join asset a on a.id = e.asset_id "
        "join dag_run r on r.run_id = e.source_run_id where a.uri = %s and e.source_task_id = 'batch_predict'",
        f"{deployment.settings.lake_url}/predictions")}
    assert predicted_days == {day for day in DAYS if read_day(lake / "predictions", day) is not None}
    assert not list(deployment.settings.airflow_home.glob("*.db")), "Airflow fell back to a SQLite database"
    model_versions = deployment.postgres.execute(deployment.databases["mlflow"]["name"],
                                                 "select version from model_versions where name = %s",
                                                 (deployment.settings.model_name,))
    assert sorted(int(version) for version, in model_versions) == sorted(int(version) for version in versions)
    assert list(deployment.artifacts.rglob("MLmodel")), "the models' artifacts did not go through the tracking server"

    rows = deployment.query("select task_id, pool, start_date, end_date from task_instance where dag_id = %s "
                            "and run_id in (select run_id from dag_run where run_type = 'backfill')", DAG_ID)
    spark_runs = [(start, end) for task_id, pool, start, end in rows if task_id in SPARK_TASKS]
    assert {pool for task_id, pool, _, _ in rows if task_id in SPARK_TASKS} == {SPARK_POOL}
    assert _overlaps(spark_runs) <= 2
    assert _overlaps([(start, end) for task_id, _, start, end in rows if task_id == "train_model"]) == 1
    for task_id in {row[0] for row in rows}:
        assert _overlaps([(start, end) for t, _, start, end in rows if t == task_id]) == 1, task_id
    timed = deployment.query("select r.logical_date::date, t.task_id, t.start_date, t.end_date from task_instance t "
                             "join dag_run r on r.run_id = t.run_id and r.dag_id = t.dag_id "
                             "where t.dag_id = %s and r.run_type = 'backfill'", DAG_ID)
    start = {(day, task_id): begun for day, task_id, begun, _ in timed}
    end = {(day, task_id): ended for day, task_id, _, ended in timed}
    for earlier, later in zip(DAYS, DAYS[1:], strict=False):
        before, after = earlier, later
        for task_id in {row[0] for row in rows}:
            assert start[after, task_id] >= end[before, task_id], (task_id, before, after)
        assert start[after, "evaluate_model"] >= end[before, "register_model"]
        assert start[after, "register_model"] >= end[before, "batch_predict"]

    def deadline_alerts() -> set[str]:
        return {p["run_id"] for p in deployment.webhook.payloads if p["kind"] == "deadline_missed"}

    waited = time.monotonic() + 120  # the executor runs deadline callbacks between tasks
    while deadline_alerts() != set(runs) and time.monotonic() < waited:
        time.sleep(3)
    assert deadline_alerts() == set(runs)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    yield driver
    driver.quit()


def _wait_for_text(driver, text: str, timeout_s: float = 120) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # The body goes stale while the login redirect replaces the page; read it again on the next poll.
    WebDriverWait(driver, timeout_s, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: text in d.find_element("tag name", "body").text)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_ui_shows_the_grid_and_follows_the_mlflow_extra_link(deployment, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base = deployment.services.base_url
    password = json.loads(deployment.services.password_file.read_text())["admin"]
    shots = deployment.settings.state_dir / "screenshots"
    shots.mkdir(exist_ok=True)

    browser.get(f"{base}/dags/{DAG_ID}")
    WebDriverWait(browser, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, "input[type=password]"))
    browser.find_element(By.CSS_SELECTOR, "input[name=username]").send_keys("admin")
    browser.find_element(By.CSS_SELECTOR, "input[name=password]").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait_for_text(browser, "ingest_ratings")
    _wait_for_text(browser, "batch_predict")
    browser.save_screenshot(str(shots / "grid.png"))

    day = DAYS[-1]
    run_id = deployment.query("select run_id from dag_run where dag_id = %s and run_type = 'backfill' and "
                              "logical_date::date = %s", DAG_ID, day)[0][0]
    registration = json.loads((model_dir(deployment.settings.lake_path, deployment.settings.model_name, day)
                               / REGISTRATION).read_text())
    browser.get(f"{base}/dags/{DAG_ID}/runs/{run_id}/tasks/register_model/details")
    _wait_for_text(browser, "Extra Links")
    _wait_for_text(browser, "MLflow model version")
    browser.save_screenshot(str(shots / "register_model.png"))
    link = browser.find_element(By.XPATH, "//a[contains(., 'MLflow model version')]").get_attribute("href")
    mlflow = deployment.env["LAKELOOP_MLFLOW_UI_URL"]
    assert link == f"{mlflow}/#/models/{deployment.settings.model_name}/versions/{registration['version']}"

    browser.get(link)
    _wait_for_text(browser, f"Version {registration['version']}")
    browser.save_screenshot(str(shots / "mlflow_model_version.png"))

@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_failed_run_alerts_once_per_task_that_exhausted_its_retries(deployment):
    deployment.broker.stop()
    before = len(deployment.webhook.payloads), len(deployment.smtp.messages)
    deployment.airflow("dags", "trigger", DAG_ID, "--logical-date", f"{FAILING_DAY.isoformat()}T00:00:00+00:00")
    [(run_id, state)] = deployment.wait_for_runs("manual", 1, timeout_s=600).items()
    assert state == "failed"
    states = {task_id: (state, tries) for run, task_id, state, tries in deployment.task_states() if run == run_id}
    assert states["ingest_ratings"] == ("failed", 2)
    assert {state for task_id, (state, _) in states.items() if task_id != "ingest_ratings"} == {"upstream_failed"}
    _wait_for_dag_callback(deployment)

    alerts = [p for p in deployment.webhook.payloads[before[0]:] if p["kind"] != "deadline_missed"]
    assert len(alerts) == 1, alerts
    [alert] = alerts
    assert (alert["kind"], alert["dag_id"], alert["task_id"], alert["run_id"], alert["try_number"]) == (
        "task_failed", DAG_ID, "ingest_ratings", run_id, 2)
    assert alert["logical_date"].startswith(FAILING_DAY.isoformat())
    assert alert["exception"].startswith("KafkaUnavailableError: Kafka broker unreachable")
    assert alert["log_url"].startswith(deployment.services.base_url) and "/tasks/ingest_ratings" in alert["log_url"]
    emails = [m for m in deployment.smtp.messages[before[1]:] if "deadline" not in m["Subject"]]
    assert [m["Subject"] for m in emails] == [f"[lakeloop] {DAG_ID}.ingest_ratings failed after 2 tries"]


def _wait_for_dag_callback(deployment: Deployment, timeout_s: float = 180) -> None:
    """Wait until the DAG processor has run the DAG's failure callback (it logs why it sends nothing)."""
    logs = deployment.settings.airflow_home / "logs"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any("that task's alert already went out" in path.read_text(errors="replace")
               for path in logs.rglob("*.log") if "dag_id=" not in str(path)):
            return
        time.sleep(3)
    pytest.fail(f"the DAG failure callback did not run within {timeout_s}s")
