"""docker-compose.yaml is valid and wired: checked with a real compose implementation (Debian's
`docker-compose`, installed by scripts/install-system-packages.sh), which validates the file against the
Compose specification without a Docker engine.

The wiring checks read the configuration compose resolves (`config`, with `.env.example` as the env file):
the services of the stack, health checks and `service_healthy` dependencies, one project image for Airflow,
MLflow and Spark, every `LAKELOOP_*` setting the code reads (found in the source, not listed here) set where
lakeloop code runs, and credentials that only come from the env file.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
SOURCE_PACKAGES = ("lakeloop", "operators", "dags", "plugins", "jobs", "tfspark")
LAKELOOP_SETTING = re.compile(r"LAKELOOP_[A-Z0-9_]+")
AIRFLOW_SERVICES = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"}
SPARK_WORKERS = {"spark-worker-1", "spark-worker-2"}
ONE_SHOT_SERVICES = {"minio-init", "airflow-init", "replay"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET")


def compose(*args: str, env_file: Path = ENV_EXAMPLE) -> subprocess.CompletedProcess:
    """Run `docker-compose -f docker-compose.yaml --env-file <env_file> <args>`, the env file alone deciding
    the stack's variables (the same names in this process's environment would win over it)."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not installed: run scripts/install-system-packages.sh")
    env = {name: value for name, value in os.environ.items() if name not in env_file_values()}
    return subprocess.run([binary, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def services() -> dict[str, dict]:
    """The services as compose resolves them with `.env.example`."""
    resolved = compose("config")
    assert resolved.returncode == 0, resolved.stderr
    return yaml.safe_load(resolved.stdout)["services"]


def settings_read_by_code() -> set[str]:
    """Every `LAKELOOP_*` name the code uses as a string of its own (an environment key), from the source."""
    names = set()
    for package in SOURCE_PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                        LAKELOOP_SETTING.fullmatch(node.value):
                    names.add(node.value)
    return names


def env_file_values() -> dict[str, str]:
    """The variables `.env.example` defines."""
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def test_compose_file_is_valid():
    validated = compose("config", "-q")
    assert validated.returncode == 0, validated.stderr


def test_stack_has_every_service_with_health_checks(services):
    assert {"postgres", "kafka", "minio", "minio-init", "mlflow", "spark-master", "replay", "airflow-init",
            *AIRFLOW_SERVICES, *SPARK_WORKERS} <= set(services)
    for name, service in services.items():
        if name not in ONE_SHOT_SERVICES:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        for dependency, condition in service.get("depends_on", {}).items():
            wanted = "service_completed_successfully" if dependency in ONE_SHOT_SERVICES else "service_healthy"
            assert condition == {"condition": wanted}, f"{name} -> {dependency}: {condition}"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert services["airflow-scheduler"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"


def test_airflow_spark_and_mlflow_run_the_project_image(services):
    project = {"airflow-init", "mlflow", "spark-master", "replay", *AIRFLOW_SERVICES, *SPARK_WORKERS}
    assert {services[name]["image"] for name in project} == {services["airflow-scheduler"]["image"]}
    assert {services[name]["build"]["dockerfile"] for name in project} == {"Dockerfile"}
    spark = services["airflow-scheduler"]["environment"]["AIRFLOW_CONN_SPARK_DEFAULT"]
    assert "spark://spark-master" in spark
    for worker in SPARK_WORKERS:
        assert services[worker]["command"][-1] == "spark://spark-master:7077"


def test_every_lakeloop_setting_reaches_the_services_running_lakeloop_code(services):
    read = settings_read_by_code()
    assert {"LAKELOOP_LAKE_URL", "LAKELOOP_KAFKA_BOOTSTRAP", "LAKELOOP_KAFKA_SASL_PASSWORD"} <= read
    for name in {"airflow-init", "replay", *AIRFLOW_SERVICES, *SPARK_WORKERS}:
        environment = services[name]["environment"]
        assert read - set(environment) == set(), name
        assert environment["LAKELOOP_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert environment["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_databases_are_postgres_with_credentials_from_the_env_file(services):
    values = env_file_values()
    airflow_db = services["airflow-scheduler"]["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert airflow_db == (f"postgresql+psycopg2://{values['AIRFLOW_DB_USER']}:{values['AIRFLOW_DB_PASSWORD']}"
                          f"@postgres:5432/{values['AIRFLOW_DB_NAME']}")
    mlflow_command = services["mlflow"]["command"]
    backend = mlflow_command[mlflow_command.index("--backend-store-uri") + 1]
    assert backend == (f"postgresql://{values['MLFLOW_DB_USER']}:{values['MLFLOW_DB_PASSWORD']}"
                       f"@postgres:5432/{values['MLFLOW_DB_NAME']}")
    assert mlflow_command[mlflow_command.index("--artifacts-destination") + 1].startswith("s3://")
    assert services["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"


def test_no_credential_is_written_in_the_compose_file():
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    for name, service in raw["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+(:?[-?][^}]*)?\}", str(value)), f"{name}: {key} is literal"


def test_compose_refuses_to_run_without_the_credentials(tmp_path):
    values = env_file_values()
    credentials = {name for name, value in values.items() if SECRET_NAME.search(name) and value}
    assert {"POSTGRES_PASSWORD", "AIRFLOW_DB_PASSWORD", "MLFLOW_DB_PASSWORD", "MINIO_ROOT_PASSWORD",
            "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET"} <= credentials
    text = COMPOSE_FILE.read_text()
    for credential in credentials:  # every use is mandatory: `${NAME:?message}`
        uses = re.findall(r"(?<!\$)\$\{" + credential + r"(:?[-?]?)", text)
        assert uses and set(uses) == {":?"}, f"{credential}: {uses}"
    without = tmp_path / "without-credentials.env"
    without.write_text("".join(f"{name}={value}\n" for name, value in values.items() if name not in credentials))
    refused = compose("config", "-q", env_file=without)
    assert refused.returncode != 0
    assert "Missing mandatory value" in refused.stderr, refused.stderr


def test_env_file_is_never_committed():
    assert subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO).returncode == 0


def test_the_lake_is_on_minio_with_credentials_from_the_env_file(services):
    values = env_file_values()
    for name in {"airflow-init", "replay", *AIRFLOW_SERVICES, *SPARK_WORKERS}:
        environment = services[name]["environment"]
        assert environment["LAKELOOP_LAKE_URL"] == f"s3://{values['MINIO_BUCKET']}/lake", name
        assert environment["AWS_ENDPOINT_URL_S3"] == "http://minio:9000", name
        assert (environment["AWS_ACCESS_KEY_ID"], environment["AWS_SECRET_ACCESS_KEY"]) == (
            values["MINIO_ROOT_USER"], values["MINIO_ROOT_PASSWORD"]), name
        if name != "airflow-init":  # it only migrates the metadata database
            assert "minio-init" in services[name]["depends_on"], name
    mounted = {volume["target"] if isinstance(volume, dict) else volume.split(":")[1]
               for service in services.values() for volume in service.get("volumes", [])}
    assert "/lake" not in mounted


def test_the_image_s3a_connector_matches_the_hadoop_client_of_the_locked_pyspark():
    import pyspark

    declared = re.search(r"^ARG HADOOP_AWS_VERSION=(\S+)$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    clients = list((Path(pyspark.__file__).parent / "jars").glob("hadoop-client-api-*.jar"))
    assert declared is not None and len(clients) == 1
    assert clients[0].name == f"hadoop-client-api-{declared.group(1)}.jar"
