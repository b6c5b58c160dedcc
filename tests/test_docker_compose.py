"""docker-compose.yaml is valid and wired: checked with a real compose implementation (Debian's
`docker-compose`, installed by scripts/install-system-packages.sh), which validates the file against the
Compose specification without a Docker engine.

The wiring checks read the configuration compose resolves (`config`, with `.env.example` as the env file):
the services of the stack, health checks and `service_healthy` dependencies, one project image for Airflow,
MLflow and Spark, every `LAKELOOP_*` setting the code reads (found in the source, not listed here) set where
lakeloop code runs, and credentials that only come from the env file.

The exposure checks (issue 18): every published port binds 127.0.0.1 unless the operator says otherwise,
Kafka's published listener takes SASL, MLflow asks for a login, placeholder secrets stop the stack (the check
script and the broker's start script are run here for real) and the Spark UIs have no kill links.
"""

from __future__ import annotations

import ast
import configparser
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
ONE_SHOT_SERVICES = {"check-secrets", "minio-init", "airflow-init", "replay"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET")
CHECK_SECRETS = REPO / "docker" / "check-secrets.sh"
KAFKA_START = REPO / "docker" / "kafka" / "start-with-sasl.sh"
IMAGE_ROOT = "/opt/lakeloop"  # where the Dockerfile copies the repository


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


def pom_property(pom: Path, name: str) -> str:
    """A property of one of the project's Maven files (jvm/)."""
    found = re.search(rf"<{re.escape(name)}>([^<]+)</{re.escape(name)}>", pom.read_text())
    assert found, (pom, name)
    return found.group(1)


def test_the_image_takes_the_s3a_connector_from_the_pom_make_setup_resolves():
    import pyspark

    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^RUN mvn .*-f jvm/pom\.xml .*--projects spark", dockerfile, re.MULTILINE)
    assert re.search(r"^COPY --from=jvm /build/jvm/lib/spark/ \$\{SPARK_HOME\}/jars/$", dockerfile, re.MULTILINE)
    assert "spark.jars.packages" not in dockerfile, "one resolver of the JVM parts: jvm/pom.xml"
    assert "jvm/lib" in (REPO / ".dockerignore").read_text().split(), "a developer's resolved jars stay out"
    clients = list((Path(pyspark.__file__).parent / "jars").glob("hadoop-client-api-*.jar"))
    assert len(clients) == 1
    assert clients[0].name == f"hadoop-client-api-{pom_property(REPO / 'jvm/spark/pom.xml', 'hadoop.version')}.jar"


def test_the_stack_broker_is_the_apache_kafka_release_the_embedded_broker_runs(services):
    assert services["kafka"]["image"] == f"apache/kafka:{pom_property(REPO / 'jvm/kafka/pom.xml', 'kafka.version')}"


def published_ports(service: dict) -> list[tuple[str, str, int]]:
    """(host address, host port, container port) of each published port; "" as address means every interface.
    Compose 1.x resolves `ports` to strings ("127.0.0.1:8080:8080/tcp"), Compose 2 to mappings."""
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.append((port.get("host_ip", ""), str(port.get("published", "")), int(port["target"])))
        else:
            parts = str(port).split("/")[0].rsplit(":", 2)
            address, published = (["", ""] + parts[:-1])[-2:]
            ports.append((address, published, int(parts[-1])))
    return ports


def mounts(service: dict) -> dict[str, str]:
    """Container path -> source (a named volume or a host path) of each of the service's volumes."""
    found = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            found[volume["target"]] = volume.get("source", "")
        else:
            source, target = volume.split(":")[:2]
            found[target] = source
    return found


def in_repo(image_path: str) -> Path:
    """The repository file the image carries at `image_path` (the Dockerfile copies the repository there)."""
    assert image_path.startswith(IMAGE_ROOT + "/"), image_path
    return REPO / image_path.removeprefix(IMAGE_ROOT + "/")


def test_every_published_port_binds_loopback_unless_the_operator_widens_it(services, tmp_path):
    values = env_file_values()
    assert values["LAKELOOP_BIND_ADDRESS"] == "127.0.0.1"
    resolved = {".env.example": services}
    for label, bind_address in (("without LAKELOOP_BIND_ADDRESS", None), ("widened", "0.0.0.0")):
        env_file = tmp_path / f"{bind_address}.env"
        env_file.write_text("".join(f"{name}={value}\n" for name, value in values.items()
                                    if name != "LAKELOOP_BIND_ADDRESS"))
        if bind_address:
            env_file.write_text(env_file.read_text() + f"LAKELOOP_BIND_ADDRESS={bind_address}\n")
        result = compose("config", env_file=env_file)
        assert result.returncode == 0, result.stderr
        resolved[label] = yaml.safe_load(result.stdout)["services"]
    for label, stack in resolved.items():
        published = {name: published_ports(service) for name, service in stack.items() if service.get("ports")}
        assert set(published) == {"airflow-apiserver", "mlflow", "spark-master", "minio", "kafka"}, label
        wanted = "0.0.0.0" if label == "widened" else "127.0.0.1"
        for name, ports in published.items():
            for address, host_port, target in ports:
                assert address == wanted, f"{label}: {name} publishes {host_port}->{target} on {address or 'all'}"


def test_kafka_publishes_only_its_sasl_listener(services):
    values = env_file_values()
    kafka = services["kafka"]
    environment = kafka["environment"]
    protocols = dict(entry.split(":") for entry in environment["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    ports = {name: int(address.rsplit(":", 1)[1]) for name, _, address in
             (listener.partition("://") for listener in environment["KAFKA_LISTENERS"].split(","))}
    published = {target for _, _, target in published_ports(kafka)}
    exposed = {name for name, port in ports.items() if port in published}
    assert exposed == {"EXTERNAL"} and published <= set(ports.values())
    for name in exposed:  # anyone reaching it must authenticate
        assert protocols[name] in {"SASL_PLAINTEXT", "SASL_SSL"}, f"{name} is {protocols[name]} and published"
        assert environment[f"KAFKA_LISTENER_NAME_{name}_SASL_ENABLED_MECHANISMS"] == "PLAIN"
    # The stack's own clients use the plaintext listener, on the compose network only.
    assert (ports["PLAINTEXT"], protocols["PLAINTEXT"]) == (9092, "PLAINTEXT")
    assert services["replay"]["environment"]["LAKELOOP_KAFKA_BOOTSTRAP"] == "kafka:9092"
    # The broker's JAAS file is written at start from .env's user (tested below).
    assert kafka["command"][0] == "bash"
    script = kafka["command"][1]
    assert Path(mounts(kafka)[script]).resolve() == KAFKA_START
    assert environment["EXTERNAL_SASL_USERNAME"] == values["KAFKA_EXTERNAL_USERNAME"]
    assert environment["EXTERNAL_SASL_PASSWORD"] == values["KAFKA_EXTERNAL_PASSWORD"]
    # The image writes every KAFKA_* variable into server.properties: none may carry the password.
    assert not [name for name, value in environment.items()
                if name.startswith("KAFKA_") and values["KAFKA_EXTERNAL_PASSWORD"] in str(value)]


def run_kafka_start(tmp_path: Path, password: str) -> tuple[subprocess.CompletedProcess, Path]:
    """docker/kafka/start-with-sasl.sh with a stand-in for the image's entrypoint, which prints what it got."""
    jaas = tmp_path / "jaas.conf"
    entrypoint = tmp_path / "run"
    entrypoint.write_text('#!/bin/sh\necho "KAFKA_OPTS=$KAFKA_OPTS"\necho "password=${EXTERNAL_SASL_PASSWORD-unset}"\n')
    entrypoint.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "EXTERNAL_SASL_USERNAME": "lakeloop", "EXTERNAL_SASL_PASSWORD": password,
           "SASL_JAAS_FILE": str(jaas), "BROKER_ENTRYPOINT": str(entrypoint)}
    return subprocess.run(["bash", str(KAFKA_START)], env=env, capture_output=True, text=True, timeout=30), jaas


def test_the_kafka_start_script_writes_the_listener_jaas_and_refuses_a_placeholder(tmp_path):
    started, jaas = run_kafka_start(tmp_path, 'pa"ss\\wo$rd')
    assert started.returncode == 0, started.stderr
    assert started.stdout.splitlines() == [f"KAFKA_OPTS=-Djava.security.auth.login.config={jaas}", "password=unset"]
    assert jaas.read_text().split() == [
        "external.KafkaServer", "{", "org.apache.kafka.common.security.plain.PlainLoginModule", "required",
        'user_lakeloop="pa\\"ss\\\\wo$rd";', "};"]
    assert jaas.stat().st_mode & 0o777 == 0o600
    jaas.unlink()
    refused, jaas = run_kafka_start(tmp_path, "change-me-kafka-external")
    assert refused.returncode == 1 and "KAFKA_EXTERNAL_PASSWORD" in refused.stderr, refused.stderr
    assert not jaas.exists()


def read_mlflow_auth_config(monkeypatch, environment: dict[str, str]):
    """MLflow's own reader of the basic-auth configuration (mlflow/server/auth/config.py), loaded alone: the
    package `mlflow.server.auth` imports the whole auth app."""
    import importlib.util

    mlflow_dir = Path(importlib.util.find_spec("mlflow").origin).parent
    spec = importlib.util.spec_from_file_location("mlflow_auth_config", mlflow_dir / "server/auth/config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ("MLFLOW_AUTH_CONFIG_PATH", "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        monkeypatch.setenv(name, str(in_repo(environment[name])) if name == "MLFLOW_AUTH_CONFIG_PATH"
                           else environment[name])
    return module.read_auth_config()


def test_mlflow_asks_for_a_login_and_the_services_sign_in(services, monkeypatch):
    values = env_file_values()
    mlflow = services["mlflow"]
    command = mlflow["command"]
    assert command[command.index("--app-name") + 1] == "basic-auth"
    environment = mlflow["environment"]
    auth = read_mlflow_auth_config(monkeypatch, environment)
    assert (auth.admin_username, auth.admin_password) == (values["MLFLOW_ADMIN_USERNAME"],
                                                          values["MLFLOW_ADMIN_PASSWORD"])
    assert auth.default_permission == "READ"  # other users may look, not move `champion`
    assert environment["MLFLOW_FLASK_SERVER_SECRET_KEY"] == values["MLFLOW_FLASK_SECRET_KEY"]
    ini = configparser.ConfigParser()
    ini.read(in_repo(environment["MLFLOW_AUTH_CONFIG_PATH"]))
    assert "admin_password" not in ini["mlflow"]  # credentials only from .env
    # The users live on a named volume, in a directory the image gives to its user (a new volume copies it).
    assert auth.database_uri.startswith("sqlite:////")
    directory = str(Path(auth.database_uri.removeprefix("sqlite:///")).parent)
    assert mounts(mlflow)[directory] == "mlflow-auth"
    assert re.search(r"chown -R lakeloop:0 .*" + re.escape(directory), (REPO / "Dockerfile").read_text())
    clients = {name for name, service in services.items() if "MLFLOW_TRACKING_URI" in service.get("environment", {})}
    assert {"airflow-init", "replay", *AIRFLOW_SERVICES, *SPARK_WORKERS} <= clients
    for name in clients:
        client = services[name]["environment"]
        assert (client["MLFLOW_TRACKING_USERNAME"], client["MLFLOW_TRACKING_PASSWORD"]) == (
            values["MLFLOW_ADMIN_USERNAME"], values["MLFLOW_ADMIN_PASSWORD"]), name


def test_the_locked_environment_has_what_mlflow_basic_auth_imports():
    """The image is built from requirements.lock like this venv, and `mlflow server --app-name basic-auth` stops
    at import without Flask-WTF (mlflow's `auth` extra)."""
    import importlib.util

    assert importlib.util.find_spec("flask_wtf") is not None, \
        "Flask-WTF is not in requirements.lock: depend on mlflow[auth] in pyproject.toml and re-lock"


def check_secrets(*specs: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(CHECK_SECRETS), *specs], env={"PATH": os.environ["PATH"], **env},
                          capture_output=True, text=True, timeout=30)


def test_check_secrets_refuses_empty_placeholder_and_short_values_naming_each():
    specs = ("A_SECRET", "B_PASSWORD:12")
    good = check_secrets(*specs, A_SECRET="from-a-vault", B_PASSWORD="twelve-chars")
    assert (good.returncode, good.stderr) == (0, "")
    placeholder = check_secrets(*specs, A_SECRET="change-me-hunter2", B_PASSWORD="twelve-chars")
    assert placeholder.returncode == 1
    assert "A_SECRET is still the change-me placeholder" in placeholder.stderr
    assert "B_PASSWORD" not in placeholder.stderr and "hunter2" not in placeholder.stderr  # never the value
    missing = check_secrets(*specs, B_PASSWORD="")
    assert missing.returncode == 1
    assert "A_SECRET is empty" in missing.stderr and "B_PASSWORD is empty" in missing.stderr
    short = check_secrets(*specs, A_SECRET="from-a-vault", B_PASSWORD="eleven-char")
    assert short.returncode == 1 and "B_PASSWORD is shorter than 12 characters" in short.stderr


def test_placeholder_secrets_stop_the_stack_before_anything_starts(services):
    values = env_file_values()
    credentials = {name for name, value in values.items() if SECRET_NAME.search(name) and value}
    assert all(values[name].startswith("change-me") for name in credentials)
    checker = services["check-secrets"]
    assert checker["command"][:2] == ["sh", f"{IMAGE_ROOT}/docker/check-secrets.sh"]
    assert in_repo(checker["command"][1]) == CHECK_SECRETS
    specs = checker["command"][2:]
    checked = {spec.split(":")[0] for spec in specs}
    assert checked == credentials
    for name, service in services.items():
        if name != "check-secrets":
            assert service["depends_on"]["check-secrets"] == {"condition": "service_completed_successfully"}, name
    # What the one-shot does with .env.example as it is: refuse, naming every secret.
    refused = check_secrets(*specs, **checker["environment"])
    assert refused.returncode == 1
    for name in credentials:
        assert f"{name} is still the change-me placeholder" in refused.stderr
    # With real values it lets the stack start; the lengths are those MinIO and MLflow require.
    assert {"MINIO_ROOT_PASSWORD:8", "MLFLOW_ADMIN_PASSWORD:12"} <= set(specs)
    accepted = check_secrets(*specs, **{name: f"set-for-real-{name.lower()}" for name in checked})
    assert accepted.returncode == 0, accepted.stderr


def test_spark_uis_have_no_kill_links(services):
    kill_off = "-Dspark.ui.killEnabled=false"
    assert kill_off in services["spark-master"]["environment"]["SPARK_MASTER_OPTS"].split()
    for worker in SPARK_WORKERS:
        assert kill_off in services[worker]["environment"]["SPARK_WORKER_OPTS"].split(), worker
    # The applications (drivers in airflow-scheduler) read spark-defaults.conf from SPARK_CONF_DIR.
    for name in {"spark-master", "airflow-init", "replay", *AIRFLOW_SERVICES, *SPARK_WORKERS}:
        defaults = in_repo(services[name]["environment"]["SPARK_CONF_DIR"]) / "spark-defaults.conf"
        settings = dict(line.split(None, 1) for line in defaults.read_text().splitlines()
                        if line.strip() and not line.startswith("#"))
        assert settings["spark.ui.killEnabled"].strip() == "false", name
