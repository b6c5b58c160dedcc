"""The environment the Airflow CLI, spark-submit and the tasks run with in the embedded set-up.

One place decides it, so `lakeloop airflow ...`, `make run`, `make ui` and the tests all see the same
Airflow home, DAGs folder, `spark_default` connection (local Spark), pools, MLflow database and lake.
Servers bind 127.0.0.1: the Airflow API server/UI on `AIRFLOW__API__PORT` (default 8080), the MLflow UI
on the port of `LAKELOOP_MLFLOW_UI_URL` (default http://127.0.0.1:5000).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

from lakeloop.config import Settings

GPU_POOL = "gpu_pool"
SPARK_POOL = "spark_pool"
POOLS = {
    GPU_POOL: (1, "TensorFlow training (TFOnSparkOperator): one at a time per GPU host"),
    SPARK_POOL: (2, "Spark applications (SparkSubmitOperator): at most two drivers at once"),
}
DEFAULT_API_PORT = "8080"
DEFAULT_MLFLOW_UI_URL = "http://127.0.0.1:5000"
PASSWORD_FILE = "simple_auth_manager_passwords.json.generated"


def airflow_environment(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default: os.environ) plus the project's Airflow/Spark/MLflow settings; explicit env wins."""
    env = dict(os.environ if base is None else base)
    venv_bin = str(Path(sys.executable).parent)
    api_port = env.get("AIRFLOW__API__PORT", DEFAULT_API_PORT)
    defaults = {
        "AIRFLOW_HOME": str(settings.airflow_home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.project_dir / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(settings.project_dir / "plugins"),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": "local[*]"}),
        "LAKELOOP_STATE_DIR": str(settings.state_dir),
        "LAKELOOP_LAKE_URL": settings.lake_url,
        "LAKELOOP_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "LAKELOOP_RATINGS_TOPIC": settings.ratings_topic,
        "LAKELOOP_MODEL_NAME": settings.model_name,
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": api_port,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "LAKELOOP_MLFLOW_UI_URL": DEFAULT_MLFLOW_UI_URL,
    }
    for key, value in defaults.items():
        env.setdefault(key, value)
    if venv_bin not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    return env


def run_airflow(args: list[str], settings: Settings, check: bool = True) -> int:
    """Run the Airflow CLI with the project's environment, initialising it on first use."""
    env = airflow_environment(settings)
    ensure_airflow_ready(env)
    completed = subprocess.run([_airflow_binary(), *args], env=env, check=False)
    if check and completed.returncode != 0:
        raise SystemExit(completed.returncode)
    return completed.returncode


def ensure_airflow_ready(env: dict[str, str]) -> None:
    """Migrate the SQLite metadata database and create the pools, once per Airflow home and pool set-up."""
    home = Path(env["AIRFLOW_HOME"])
    marker = home / ".lakeloop-initialised"
    wanted = json.dumps(POOLS, sort_keys=True)
    if marker.exists() and marker.read_text() == wanted:
        return
    home.mkdir(parents=True, exist_ok=True)
    airflow = _airflow_binary()
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    for pool, (slots, description) in POOLS.items():
        subprocess.run([airflow, "pools", "set", pool, str(slots), description], env=env, check=True,
                       stdout=subprocess.DEVNULL)
    marker.write_text(wanted)


def run_ui(settings: Settings) -> int:
    """Serve the MLflow UI and `airflow standalone` (UI, scheduler, DAG processor, triggerer) until Ctrl-C."""
    env = airflow_environment(settings)
    ensure_airflow_ready(env)
    mlflow_url = urlparse(env["LAKELOOP_MLFLOW_UI_URL"])
    mlflow_ui = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri",
                                  env["MLFLOW_TRACKING_URI"], "--host", "127.0.0.1", "--port",
                                  str(mlflow_url.port or 5000)], env=env)
    print(f"MLflow UI:  {env['LAKELOOP_MLFLOW_UI_URL']}\n"
          f"Airflow UI: {env['AIRFLOW__API__BASE_URL']}  (user admin, password in "
          f"{Path(env['AIRFLOW_HOME']) / PASSWORD_FILE})", flush=True)
    try:
        return subprocess.run([_airflow_binary(), "standalone"], env=env, check=False).returncode
    except KeyboardInterrupt:
        return 0
    finally:
        mlflow_ui.terminate()
        mlflow_ui.wait(timeout=30)


def _airflow_binary() -> str:
    return str(Path(sys.executable).parent / "airflow")
