"""Project settings read from the environment, each with an embedded default, and checked when they are loaded:
a value lakeloop cannot use raises ConfigurationError naming the variable (docs/operations.md, configuration errors).

The defaults make a fresh clone runnable with no server but the embedded Kafka-protocol broker:
the lake, the Airflow home and the MLflow database all live under the project's state directory.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from lakeloop.data_quality import DEFAULT_MAX_RATING_DRIFT
from lakeloop.gate import DEFAULT_TOLERANCE

PROJECT_DIR = Path(__file__).resolve().parents[1]
DEFAULT_KAFKA_PORT = 19092
DEFAULT_KAFKA_BOOTSTRAP = f"127.0.0.1:{DEFAULT_KAFKA_PORT}"
BROKER_DIR_NAME = "broker"
# The training task checkpoints at least this often (besides the trainer's every-N-steps): a killed task loses at
# most five minutes of training; a checkpoint is the model's tables and their Adam moments (49 MB at 123K users).
DEFAULT_CHECKPOINT_SECONDS = 300.0
# VACUUM keeps the files of every Delta table version younger than this (Delta's own default: 7 days), so readers
# and time travel to those versions keep working; shorter breaks readers of recent versions (docs/deployment.md).
DEFAULT_DELTA_RETENTION_HOURS = 168
MIN_DELTA_RETENTION_HOURS = 1
KAFKA_SECURITY_PROTOCOL_ENV = "LAKELOOP_KAFKA_SECURITY_PROTOCOL"
KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# Lake URL schemes besides file://: what `Lake.from_url` opens through pyarrow.fs and Spark reads (s3 as s3a).
REMOTE_LAKE_SCHEMES = ("s3", "gs", "gcs", "hdfs")

T = TypeVar("T")


@dataclass(frozen=True)
class BadSetting:
    """One variable whose value lakeloop cannot use, and what it would accept instead."""

    name: str
    value: object
    allowed: str

    def __str__(self) -> str:
        return f"{self.name}={self.value!r}: {self.allowed}"


class ConfigurationError(ValueError):
    """Settings lakeloop cannot use, found when they are loaded rather than halfway through a run.

    The message names each bad variable with its value and what is allowed (`LAKELOOP_X='bad': what is
    allowed`, several joined by `; `), so the DAG's import error and the `lakeloop` command say the same.
    """

    def __init__(self, *problems: BadSetting) -> None:
        super().__init__("; ".join(str(problem) for problem in problems))
        self.problems = problems

    def __reduce__(self) -> tuple[type[ConfigurationError], tuple[BadSetting, ...]]:
        return type(self), self.problems


class SettingsReader:
    """Reads variables from one environment and collects every bad value, so that `check` raises one
    ConfigurationError naming all of them instead of the first only."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[BadSetting] = []

    def read(self, name: str, parse: Callable[[str], T], default: T, empty_is_unset: bool = False) -> T:
        """`parse` of the variable's value, or `default` when it is unset (or empty, if `empty_is_unset`).

        `parse` refuses a value by raising ValueError saying what is allowed; the refusal is recorded and
        `default` returned, so the other variables are still checked.
        """
        value = self.environ.get(name)
        if value is None or (empty_is_unset and value == ""):
            return default
        try:
            return parse(value)
        except ValueError as refused:
            self.problems.append(BadSetting(name, value, str(refused)))
            return default

    def check(self) -> None:
        """Raise ConfigurationError naming every bad value read so far, if any."""
        if self.problems:
            raise ConfigurationError(*self.problems)


def parse_finite(text: str, allowed: str) -> float:
    """`text` as a finite number; ValueError(`allowed`) for anything else (`abc`, `nan`, `inf`)."""
    try:
        number = float(text)
    except ValueError:
        raise ValueError(allowed) from None
    if not math.isfinite(number):
        raise ValueError(allowed)
    return number


def parse_finite_within(text: str, allowed: str, minimum: float = -math.inf, maximum: float = math.inf, *,
                        above_minimum: bool = False) -> float:
    """`parse_finite` of `text` within [minimum, maximum] (above `minimum` if `above_minimum`); ValueError(allowed)
    otherwise."""
    number = parse_finite(text, allowed)
    if not minimum <= number <= maximum or (above_minimum and number == minimum):
        raise ValueError(allowed)
    return number


def parse_whole_number(text: str, minimum: int) -> int:
    """`text` as a whole number >= `minimum`; ValueError naming what is allowed otherwise."""
    allowed = f"a whole number >= {minimum}"
    try:
        number = int(text)
    except ValueError:
        raise ValueError(allowed) from None
    if number < minimum:
        raise ValueError(allowed)
    return number


def parse_positive_seconds(text: str) -> float:
    """A duration: a finite number of seconds > 0 (the retry delay, the longest time between checkpoints)."""
    return parse_finite_within(text, "a finite number of seconds > 0", minimum=0, above_minimum=True)


def parse_delta_retention_hours(text: str) -> int:
    """VACUUM's retention of the lake's Delta tables: a whole number of hours >= 1 (a shorter one deletes the files
    of versions readers may still be reading, and a write's files before its commit)."""
    try:
        return parse_whole_number(text, MIN_DELTA_RETENTION_HOURS)
    except ValueError:
        raise ValueError(f"a whole number of hours >= {MIN_DELTA_RETENTION_HOURS} ({DEFAULT_DELTA_RETENTION_HOURS} "
                         "by default): VACUUM deletes the files of table versions older than this, and a shorter "
                         "retention breaks readers of recent versions") from None


def parse_gate_tolerance(text: str) -> float:
    """The quality gate's tolerance: a finite relative RMSE >= 0 (`nan` or `inf` would promote every model)."""
    return parse_finite_within(text, "a finite number >= 0 (relative RMSE: 0.01 lets a model be 1 % worse than "
                                     "the champion)", minimum=0)


def parse_max_rating_drift(text: str) -> float:
    """The ETL's drift threshold: a total variation distance, 0 to 1."""
    return parse_finite_within(text, "a total variation distance from 0 to 1 (0.2 by default)", 0, 1)


def parse_lake_url(text: str) -> str:
    """A lake URL every process resolves the same way: an absolute path, `file:///absolute/path`, or an object
    store URL with a bucket (`s3://bucket/prefix`, `gs://`, `gcs://`, `hdfs://`).

    A relative path would land in each process's working directory and `file://relative/x` means `/x`.
    """
    allowed = ("an absolute path, file:///absolute/path, or s3://bucket/prefix (also gs://, gcs://, hdfs://, "
               "and s3:// rather than s3a://, which lakeloop derives for Spark)")
    parsed = urlparse(text)
    if not parsed.scheme:
        valid = Path(text).is_absolute()
    elif parsed.scheme == "file":
        valid = parsed.netloc in ("", "localhost") and parsed.path.startswith("/")
    else:
        valid = (parsed.scheme in REMOTE_LAKE_SCHEMES and text.startswith(f"{parsed.scheme}://")
                 and bool(parsed.netloc))
    if not valid:
        raise ValueError(allowed)
    return text


_BOOTSTRAP_ADDRESS = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})")


def parse_kafka_bootstrap(text: str) -> str:
    """Kafka bootstrap servers: a comma-separated list of at least one `host:port`, returned without blanks."""
    allowed = "a comma-separated list of host:port with a port from 1 to 65535, e.g. broker-1:9092,broker-2:9092"
    addresses = [address.strip() for address in text.split(",") if address.strip()]
    if not addresses:
        raise ValueError(allowed)
    for address in addresses:
        match = _BOOTSTRAP_ADDRESS.fullmatch(address)
        if match is None or not 1 <= int(match.group(2)) <= 65535:
            raise ValueError(allowed)
    return ",".join(addresses)


def parse_kafka_security_protocol(text: object) -> str:
    """One of Kafka's security protocols, in its canonical upper case (`sasl_ssl` → `SASL_SSL`).

    kafka-python treats any other string as plaintext, so a misspelling (`SASL-SSL`) is refused, never passed on.
    """
    if not isinstance(text, str) or text.upper() not in KAFKA_SECURITY_PROTOCOLS:
        raise ValueError(f"one of {', '.join(KAFKA_SECURITY_PROTOCOLS)} (any case)")
    return text.upper()


_MODEL_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def parse_model_name(text: str) -> str:
    """A registered model name that is also safe as one path segment of the lake: letters, digits, `-`, `_` and
    `.`, neither starting with `.` nor containing `..` (`../../x` would leave the lake's models directory)."""
    if _MODEL_NAME.fullmatch(text) is None or ".." in text:
        raise ValueError("letters, digits, '-', '_' and '.', not starting with '.' and without '..'")
    return text


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
    max_rating_drift: float = DEFAULT_MAX_RATING_DRIFT
    gpus_per_worker: int = 0
    gpu_pool_slots: int = 1
    checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS
    delta_retention_hours: int = DEFAULT_DELTA_RETENTION_HOURS

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
        return self.state_dir / BROKER_DIR_NAME


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


def s3_endpoint(environ: Mapping[str, str] | None = None) -> str | None:
    """The S3 endpoint the standard AWS variables name (`AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`: MinIO or
    another S3 server), or None for AWS itself; every S3 client of the project takes it from here."""
    env = os.environ if environ is None else environ
    return env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")


def aws_region(environ: Mapping[str, str] | None = None) -> str | None:
    """The region the standard AWS variables name (`AWS_REGION`, else `AWS_DEFAULT_REGION`), or None."""
    env = os.environ if environ is None else environ
    return env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")


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
    endpoint = s3_endpoint(env)
    if endpoint:
        settings["fs.s3a.endpoint"] = endpoint
        settings["fs.s3a.path.style.access"] = "true"
        settings["fs.s3a.connection.ssl.enabled"] = str(urlparse(endpoint).scheme != "http").lower()
    region = aws_region(env)
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


def state_dir_from(environ: Mapping[str, str] | None = None) -> Path:
    """The state directory (`LAKELOOP_STATE_DIR`, default `var/` of the project), read on its own: what
    `lakeloop services down` needs to find the broker's pid file whatever the other settings say."""
    env = os.environ if environ is None else environ
    return Path(env.get("LAKELOOP_STATE_DIR", PROJECT_DIR / "var")).resolve()


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and check settings from `environ` (default: the process environment), filling in the defaults.

    Every variable is checked here, once, before anything runs: a bad value raises one ConfigurationError naming
    each bad variable and its value (the DAG's import error, or the `lakeloop` command's message).
    """
    env = os.environ if environ is None else environ
    state_dir = state_dir_from(env)
    reader = SettingsReader(env)
    settings = Settings(
        project_dir=PROJECT_DIR,
        state_dir=state_dir,
        lake_url=reader.read("LAKELOOP_LAKE_URL", parse_lake_url, (state_dir / "lake").as_uri()),
        kafka_bootstrap=reader.read("LAKELOOP_KAFKA_BOOTSTRAP", parse_kafka_bootstrap, DEFAULT_KAFKA_BOOTSTRAP),
        ratings_topic=env.get("LAKELOOP_RATINGS_TOPIC", "ratings"),
        model_name=reader.read("LAKELOOP_MODEL_NAME", parse_model_name, "lakeloop-fm"),
        mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI", f"sqlite:///{state_dir / 'mlflow.db'}"),
        gate_tolerance=reader.read("LAKELOOP_GATE_TOLERANCE", parse_gate_tolerance, DEFAULT_TOLERANCE),
        max_rating_drift=reader.read("LAKELOOP_MAX_RATING_DRIFT", parse_max_rating_drift, DEFAULT_MAX_RATING_DRIFT),
        gpus_per_worker=reader.read("LAKELOOP_GPUS_PER_WORKER", lambda text: parse_whole_number(text, 0), 0),
        gpu_pool_slots=reader.read("LAKELOOP_GPU_POOL_SLOTS", lambda text: parse_whole_number(text, 1), 1),
        checkpoint_seconds=reader.read("LAKELOOP_CHECKPOINT_SECONDS", parse_positive_seconds,
                                       DEFAULT_CHECKPOINT_SECONDS),
        delta_retention_hours=reader.read("LAKELOOP_DELTA_RETENTION_HOURS", parse_delta_retention_hours,
                                          DEFAULT_DELTA_RETENTION_HOURS),
    )
    # Not kept in Settings (the Kafka clients read it with the other security variables, see
    # lakeloop.ingest.kafka_config), but checked here so a misspelling stops everything up front.
    reader.read(KAFKA_SECURITY_PROTOCOL_ENV, parse_kafka_security_protocol, None, empty_is_unset=True)
    reader.check()
    return settings
