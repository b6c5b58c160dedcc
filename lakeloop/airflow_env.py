"""The environment the Airflow CLI, spark-submit and the tasks run with in the embedded set-up.

One place decides it, so `lakeloop airflow ...`, `make run` and the tests all see the same Airflow
home, DAGs folder, `spark_default` connection (local Spark), MLflow database and lake.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lakeloop.config import Settings

GPU_POOL = "gpu_pool"
GPU_POOL_SLOTS = 1


def airflow_environment(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default: os.environ) plus the project's Airflow/Spark/MLflow settings; explicit env wins."""
    env = dict(os.environ if base is None else base)
    venv_bin = str(Path(sys.executable).parent)
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
    """Migrate the SQLite metadata database and create the pools, once per Airflow home."""
    home = Path(env["AIRFLOW_HOME"])
    marker = home / ".lakeloop-initialised"
    if marker.exists():
        return
    home.mkdir(parents=True, exist_ok=True)
    airflow = _airflow_binary()
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([airflow, "pools", "set", GPU_POOL, str(GPU_POOL_SLOTS), "GPU training (TFOnSparkOperator)"],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    marker.write_text("ok\n")


def _airflow_binary() -> str:
    return str(Path(sys.executable).parent / "airflow")
