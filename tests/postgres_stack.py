"""The production metadata set-up of the compose stack, on this machine: Airflow's and MLflow's databases on a
throwaway PostgreSQL cluster (created by the stack's own init script) and an MLflow tracking server on one of them."""

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

from lakeloop.airflow_env import MLFLOW_SERVER_ENV, stop_process_groups
from lakeloop.services import free_port

REPO = Path(__file__).resolve().parents[1]


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
    """An MLflow tracking server (and UI) on 127.0.0.1 serving artifacts from `artifacts`; yields its URL."""
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
