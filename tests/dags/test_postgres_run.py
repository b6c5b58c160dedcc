"""The whole daily loop end to end with `airflow dags test`, on the production metadata set-up: Airflow's
metadata database and MLflow's backend store on PostgreSQL, as in docker-compose.yaml.

A MovieLens slice goes through the embedded Kafka-protocol broker over TCP, real Spark (local), TensorFlow
trained on Spark and an MLflow tracking server. (The embedded SQLite set-up runs the same DAG under the
scheduler in `test_daily_retrain_scheduler`; `dags test` on SQLite is what `make run` does.)

A throwaway PostgreSQL cluster (Debian's package, 127.0.0.1) gets its databases from the compose stack's own
init script; Airflow migrates its schema there, and an MLflow tracking server (as in the compose file, its
artifacts proxied) keeps runs and the registry there. The day's outputs are checked (`check_day_outputs`),
and the run, its task instances, the predictions Asset's event and the registered model must be rows in
PostgreSQL.

The catalog is the one a user's data set often has: `item_id` as an integer (the events' type), where the replay
writes MovieLens ids as strings; the day must run through as on the string catalog.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from daily_retrain_run import check_day_outputs, loop_environment, publish_day, run_dags_test

from lakeloop.airflow_env import MLFLOW_SERVER_ENV, stop_process_groups
from lakeloop.config import load_settings
from lakeloop.services import free_port
from tests.catalogs import with_integer_item_ids

REPO = Path(__file__).resolve().parents[2]
EVENTS = 5_000
DAG_TASKS = {"ingest_ratings", "spark_etl", "spark_features", "train_model", "evaluate_model", "register_model",
             "batch_predict"}


def create_databases(postgres) -> dict[str, dict[str, str]]:
    """Run docker/postgres/init-databases.sh against the cluster; the names, owners and passwords it used."""
    databases = {component: {"name": f"{component}_db", "user": f"{component}_owner",
                             "password": secrets.token_urlsafe(12)} for component in ("airflow", "mlflow")}
    env = dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(postgres.port), PGPASSWORD=postgres.password,
               POSTGRES_USER=postgres.user)
    for component, database in databases.items():
        env.update({f"{component.upper()}_DB_{key.upper()}": value for key, value in database.items()})
    subprocess.run(["bash", str(REPO / "docker" / "postgres" / "init-databases.sh")], env=env, check=True,
                   capture_output=True)
    return databases


def database_url(postgres, database: dict[str, str], driver: str) -> str:
    """The SQLAlchemy URL of one of the databases the init script created, as its owner."""
    return f"{driver}://{database['user']}:{database['password']}@127.0.0.1:{postgres.port}/{database['name']}"


@contextmanager
def mlflow_server(backend_store_uri: str, artifacts: Path, timeout: float = 180.0) -> Iterator[str]:
    """An MLflow tracking server on 127.0.0.1 serving artifacts from `artifacts`; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", backend_store_uri,
               "--serve-artifacts", "--artifacts-destination", artifacts.as_uri(), "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1"]
    with open(artifacts.parent / "mlflow-server.log", "ab") as log:
        server = subprocess.Popen(command, env={**os.environ, **MLFLOW_SERVER_ENV}, stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert server.poll() is None, f"mlflow server exited with {server.returncode}"
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:  # not listening yet, or an HTTP error status
                assert time.monotonic() < deadline, f"mlflow server not healthy within {timeout:.0f}s"
                time.sleep(0.5)
        yield url
    finally:
        stop_process_groups([server])


@pytest.mark.slow
def test_daily_retrain_on_postgres(kafka_broker, movielens, postgres, tmp_path):
    databases = create_databases(postgres)
    artifacts = tmp_path / "mlflow-artifacts"
    with mlflow_server(database_url(postgres, databases["mlflow"], "postgresql"), artifacts) as tracking_uri:
        env = loop_environment(kafka_broker.bootstrap, tmp_path / "state", "pg-ratings", "pg-fm", tracking_uri)
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = database_url(postgres, databases["airflow"],
                                                                  "postgresql+psycopg2")
        settings = load_settings(env)
        publish_day(settings, with_integer_item_ids(movielens), EVENTS)
        run_dags_test(env)
        check_day_outputs(settings, EVENTS)

    airflow_db = databases["airflow"]["name"]
    runs = postgres.execute(airflow_db, "SELECT run_id, state FROM dag_run WHERE dag_id = 'daily_retrain'")
    assert [state for _, state in runs] == ["success"]
    task_states = postgres.execute(
        airflow_db, "SELECT task_id, state FROM task_instance WHERE dag_id = 'daily_retrain' AND run_id = %s",
        (runs[0][0],))
    assert dict(task_states) == dict.fromkeys(DAG_TASKS, "success")
    assert ("gpu_pool",) in postgres.execute(airflow_db, "SELECT pool FROM slot_pool")
    predictions_events = postgres.execute(
        airflow_db, "SELECT e.source_task_id FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri = %s",
        (f"{settings.lake_url}/predictions",))
    assert predictions_events == [("batch_predict",)]
    assert not list(settings.airflow_home.glob("*.db")), "Airflow fell back to a SQLite database"

    versions = postgres.execute(databases["mlflow"]["name"],
                                "SELECT version FROM model_versions WHERE name = %s", (settings.model_name,))
    assert versions == [(1,)]
    assert list(artifacts.rglob("MLmodel")), "the model's artifacts did not go through the tracking server"
