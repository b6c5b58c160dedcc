"""The environment the Airflow CLI, spark-submit and the tasks run with in the embedded set-up.

One place decides it, so `lakeloop airflow ...`, `make run`, `make ui` and the tests all see the same
Airflow home, DAGs folder, `spark_default` connection (local Spark), pools, MLflow database and lake.
Servers bind 127.0.0.1: the Airflow API server/UI on `AIRFLOW__API__PORT` (default 8080), the MLflow UI
on the port of `LAKELOOP_MLFLOW_UI_URL` (default http://127.0.0.1:5000).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

from lakeloop.config import Settings, load_settings
from lakeloop.names import GPU_POOL, SPARK_POOL
from lakeloop.operations import RUN_DEADLINE_ENV, SCHEDULED_RUN_DEADLINE_MINUTES

DEFAULT_API_PORT = "8080"
DEFAULT_MLFLOW_UI_URL = "http://127.0.0.1:5000"
# The loop runs no MLflow server jobs (GenAI scorers and the like): without this, each server starts seven idle job
# consumers, ~185 MB and an mlflow import each.
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
PASSWORD_FILE = "simple_auth_manager_passwords.json.generated"
# TensorFlow's C++ log threshold: 2 hides its info and warnings; 3 hides its errors too, among them the
# `failed call to cuInit` every TensorFlow import prints on a machine without a CUDA driver, which a CPU-only set-up
# does not need to hear about. With GPUs configured those errors matter and stay.
TF_LOG_LEVEL_WITH_GPUS, TF_LOG_LEVEL_CPU_ONLY = "2", "3"


# Airflow's `sql_alchemy_connect_args` (imported by every Airflow process of the project): on the embedded SQLite
# database a 60 s busy timeout. SQLite lets one writer in at a time and Python's driver gives up after 5 s
# ("database is locked"), too short with the scheduler, the API server and a CLI backfill writing at once on a busy
# machine. Other databases get no extra arguments.
METADATA_DB_CONNECT_ARGS = (
    {"timeout": 60} if os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "sqlite").startswith("sqlite") else {})


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
        "SPARK_CONF_DIR": str(settings.project_dir / "conf" / "spark"),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "TF_CPP_MIN_LOG_LEVEL": TF_LOG_LEVEL_WITH_GPUS if gpus_configured(settings, env) else TF_LOG_LEVEL_CPU_ONLY,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": api_port,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "LAKELOOP_MLFLOW_UI_URL": DEFAULT_MLFLOW_UI_URL,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "lakeloop.airflow_env.METADATA_DB_CONNECT_ARGS",
    }
    for key, value in defaults.items():
        env.setdefault(key, value)
    if venv_bin not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    return env


def gpus_configured(settings: Settings, env: Mapping[str, str]) -> bool:
    """Whether the deployment asks for GPUs: `LAKELOOP_GPUS_PER_WORKER` above 0, or `CUDA_VISIBLE_DEVICES` naming
    a device."""
    return settings.gpus_per_worker > 0 or env.get("CUDA_VISIBLE_DEVICES", "").strip() not in ("", "-1")


def airflow_pools(settings: Settings) -> dict[str, tuple[int, str]]:
    """The project's Airflow pools: name → (slots, description); the GPU pool's slots come from
    `LAKELOOP_GPU_POOL_SLOTS` (how many trainings may hold the GPUs at once)."""
    return {
        GPU_POOL: (settings.gpu_pool_slots, "TensorFlow training (TFOnSparkOperator): trainings that may use the "
                                            "GPUs at once"),
        SPARK_POOL: (2, "Spark applications (SparkSubmitOperator): at most two drivers at once"),
    }


def run_airflow(args: list[str], settings: Settings, check: bool = True) -> int:
    """Run the Airflow CLI with the project's environment, initialising it on first use.

    `dags test` runs without the run deadline, which Airflow 3.3.2's `dag.test()` cannot handle
    (see `lakeloop/operations.py`).
    """
    env = airflow_environment(settings)
    if args[:2] == ["dags", "test"] and env.pop(RUN_DEADLINE_ENV, None):
        print(f"lakeloop: {RUN_DEADLINE_ENV} ignored: `airflow dags test` cannot run a DAG with a deadline",
              file=sys.stderr)
    ensure_airflow_ready(env)
    completed = subprocess.run([_airflow_binary(), *args], env=env, check=False)
    if check and completed.returncode != 0:
        raise SystemExit(completed.returncode)
    return completed.returncode


def ensure_airflow_ready(env: dict[str, str]) -> None:
    """Migrate the SQLite metadata database and create the pools, once per Airflow home and pool set-up."""
    home = Path(env["AIRFLOW_HOME"])
    marker = home / ".lakeloop-initialised"
    pools = airflow_pools(load_settings(env))
    wanted = json.dumps(pools, sort_keys=True)
    if marker.exists() and marker.read_text() == wanted:
        return
    home.mkdir(parents=True, exist_ok=True)
    airflow = _airflow_binary()
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    pools_file = home / "lakeloop-pools.json"
    pools_file.write_text(json.dumps({pool: {"slots": slots, "description": description}
                                      for pool, (slots, description) in pools.items()}))
    subprocess.run([airflow, "pools", "import", str(pools_file)], env=env, check=True, stdout=subprocess.DEVNULL)
    marker.write_text(wanted)


class AirflowServices:
    """What `airflow standalone` runs (API server/UI, scheduler, DAG processor, triggerer), on 127.0.0.1 only.

    `airflow standalone` also starts two log servers (ports 8793/8794) bound to every interface, a host
    no setting changes; with the LocalExecutor the API server reads task logs from the local files anyway,
    so these components run without them. Each component is a process group of its own, stopped by its id;
    output goes to `<AIRFLOW_HOME>/services/<component>.log`.
    """

    COMPONENTS = {
        "api-server": ["api-server"],
        "scheduler": ["scheduler", "--skip-serve-logs"],
        "dag-processor": ["dag-processor"],
        "triggerer": ["triggerer", "--skip-serve-logs"],
    }

    def __init__(self, env: dict[str, str]) -> None:
        self.env = {RUN_DEADLINE_ENV: str(SCHEDULED_RUN_DEADLINE_MINUTES), **env}
        self.log_dir = Path(env["AIRFLOW_HOME"]) / "services"
        self.processes: dict[str, subprocess.Popen] = {}

    @property
    def base_url(self) -> str:
        """The UI/API address."""
        return self.env["AIRFLOW__API__BASE_URL"]

    @property
    def password_file(self) -> Path:
        """Where the simple auth manager keeps the generated password of the user `admin`."""
        return Path(self.env["AIRFLOW_HOME"]) / PASSWORD_FILE

    def start(self) -> None:
        """Initialise the home if needed, then start every component."""
        ensure_airflow_ready(self.env)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name, args in self.COMPONENTS.items():
            with (self.log_dir / f"{name}.log").open("ab") as log:
                self.processes[name] = subprocess.Popen([_airflow_binary(), *args], env=self.env, stdout=log,
                                                        stderr=subprocess.STDOUT, start_new_session=True)

    def wait_until_healthy(self, timeout_s: float = 300.0) -> None:
        """Block until the API server reports every component healthy; raise if one exits or time runs out."""
        deadline = time.monotonic() + timeout_s
        while True:
            exited = {name: proc.returncode for name, proc in self.processes.items() if proc.poll() is not None}
            if exited:
                raise RuntimeError(f"Airflow components exited: {exited}; see {self.log_dir}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/api/v2/monitor/health", timeout=5) as response:
                    health = json.load(response)
                if all(part.get("status") == "healthy" for part in health.values()):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"Airflow not healthy after {timeout_s:.0f}s; see {self.log_dir}")
            time.sleep(2)

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop every component (SIGTERM to its process group, SIGKILL after `timeout_s`)."""
        stop_process_groups(list(self.processes.values()), timeout_s)
        self.processes.clear()


def start_mlflow_ui(env: dict[str, str]) -> subprocess.Popen:
    """The MLflow UI for `MLFLOW_TRACKING_URI` on 127.0.0.1 at the port of `LAKELOOP_MLFLOW_UI_URL`, in a
    process group of its own (it forks workers); stop it with `stop_process_groups`."""
    port = urlparse(env["LAKELOOP_MLFLOW_UI_URL"]).port or 5000
    return subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri",
                             env["MLFLOW_TRACKING_URI"], "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            env={**env, **MLFLOW_SERVER_ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def stop_process_groups(processes: list[subprocess.Popen], timeout_s: float = 60.0) -> None:
    """SIGTERM the process group each process leads, then SIGKILL the groups still there after `timeout_s`."""
    for proc in processes:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for proc in processes:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_ui(settings: Settings) -> int:
    """Serve the MLflow UI and the Airflow components (UI, scheduler, DAG processor, triggerer) until Ctrl-C."""
    env = airflow_environment(settings)
    services = AirflowServices(env)
    mlflow_ui = start_mlflow_ui(env)
    try:
        services.start()
        services.wait_until_healthy()
        print(f"MLflow UI:  {env['LAKELOOP_MLFLOW_UI_URL']}\n"
              f"Airflow UI: {services.base_url}  (user admin, password in {services.password_file})\n"
              f"component logs in {services.log_dir}; Ctrl-C stops everything", flush=True)
        while all(proc.poll() is None for proc in services.processes.values()):
            time.sleep(1)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        services.stop()
        stop_process_groups([mlflow_ui])


def _airflow_binary() -> str:
    return str(Path(sys.executable).parent / "airflow")
