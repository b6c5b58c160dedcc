"""Project settings read from the environment, each with an embedded default.

The defaults make a fresh clone runnable with no server but the embedded Kafka-protocol broker:
the lake, the Airflow home and the MLflow database all live under the project's state directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from lakeloop.gate import DEFAULT_TOLERANCE

PROJECT_DIR = Path(__file__).resolve().parents[1]
DEFAULT_KAFKA_PORT = 19092


@dataclass(frozen=True)
class Settings:
    """Where everything lives and what it is called, for one lakeloop deployment."""

    project_dir: Path
    state_dir: Path
    lake_url: str
    kafka_bootstrap: str
    ratings_topic: str
    model_name: str
    mlflow_tracking_uri: str
    gate_tolerance: float = DEFAULT_TOLERANCE

    @property
    def lake_path(self) -> Path:
        """The lake root as a local path, for tools that inspect a local lake's files directly (the DAG tests, the
        benchmarks); every step of the pipeline takes `lake_url`, local or on an object store."""
        return lake_url_to_path(self.lake_url)

    @property
    def airflow_home(self) -> Path:
        """The project-local Airflow home (SQLite metadata database, logs)."""
        return self.state_dir / "airflow"

    @property
    def dataset_dir(self) -> Path:
        """Where `make setup` unpacks MovieLens 100K."""
        return self.state_dir / "data" / "ml-100k"

    @property
    def broker_dir(self) -> Path:
        """State of the embedded Kafka-protocol broker (data, pid file, log)."""
        return self.state_dir / "broker"


def lake_url_to_path(url: str) -> Path:
    """Turn a `file://` URL (or a bare path) into a local path; refuse other schemes clearly."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme else url).resolve()
    raise ValueError(
        f"LAKELOOP_LAKE_URL={url!r}: this tool reads the lake's files on a local file system (file://); the "
        "pipeline's steps work on object stores too. See README, 'The lake on S3'.")


S3A_CREDENTIALS = "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
S3A_SESSION_CREDENTIALS = "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider"


def s3a_settings(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The Hadoop settings Spark's s3a connector needs to reach the lake's S3, from the standard AWS variables
    that pyarrow (ingestion, manifests) reads too, so both sides reach the same store with the same identity.

    `AWS_ENDPOINT_URL_S3` (or `AWS_ENDPOINT_URL`) → the endpoint, with path-style access (MinIO, other S3
    servers); `AWS_REGION` (or `AWS_DEFAULT_REGION`) → the region; `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`
    (and `AWS_SESSION_TOKEN`) → the keys and the provider that takes them from the settings, which reach the
    executors with the job (Spark redacts them in its UI). Without keys s3a keeps its default provider chain
    (instance or container roles).
    """
    env = os.environ if environ is None else environ
    settings: dict[str, str] = {}
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        settings["fs.s3a.endpoint"] = endpoint
        settings["fs.s3a.path.style.access"] = "true"
        settings["fs.s3a.connection.ssl.enabled"] = str(urlparse(endpoint).scheme != "http").lower()
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        settings["fs.s3a.endpoint.region"] = region
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        settings["fs.s3a.access.key"] = env["AWS_ACCESS_KEY_ID"]
        settings["fs.s3a.secret.key"] = env["AWS_SECRET_ACCESS_KEY"]
        settings["fs.s3a.aws.credentials.provider"] = S3A_CREDENTIALS
        if env.get("AWS_SESSION_TOKEN"):
            settings["fs.s3a.session.token"] = env["AWS_SESSION_TOKEN"]
            settings["fs.s3a.aws.credentials.provider"] = S3A_SESSION_CREDENTIALS
    return settings


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read settings from `environ` (default: the process environment), filling in the defaults."""
    env = os.environ if environ is None else environ
    state_dir = Path(env.get("LAKELOOP_STATE_DIR", PROJECT_DIR / "var")).resolve()
    return Settings(
        project_dir=PROJECT_DIR,
        state_dir=state_dir,
        lake_url=env.get("LAKELOOP_LAKE_URL", (state_dir / "lake").as_uri()),
        kafka_bootstrap=env.get("LAKELOOP_KAFKA_BOOTSTRAP", f"127.0.0.1:{DEFAULT_KAFKA_PORT}"),
        ratings_topic=env.get("LAKELOOP_RATINGS_TOPIC", "ratings"),
        model_name=env.get("LAKELOOP_MODEL_NAME", "lakeloop-fm"),
        mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI", f"sqlite:///{state_dir / 'mlflow.db'}"),
        gate_tolerance=float(env.get("LAKELOOP_GATE_TOLERANCE", DEFAULT_TOLERANCE)),
    )
