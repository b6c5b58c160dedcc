"""Fixtures shared by the whole suite: a real Apache Kafka broker, an isolated project state, a lake with one
day's real feature partition (built by the ETL and features jobs) and FMs for it."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from lakeloop.delta import replace_partition
from lakeloop.ingest.schema import RATINGS_SCHEMA
from lakeloop.lake import Lake
from lakeloop.movielens import MovieLens
from lakeloop.names import RAW_RATINGS
from lakeloop.replay import build_events, write_catalog
from lakeloop.services import EmbeddedBroker, free_port
from tests.s3_server import S3Server

REPO = Path(__file__).resolve().parents[1]
FEATURE_DAY = date(2026, 11, 20)
TEST_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="lakeloop-airflow-"))
# Airflow reads its configuration when first imported: point it at a throwaway home before any test does.
os.environ["AIRFLOW_HOME"] = str(TEST_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Every Spark JVM of the suite (in-process sessions, spark-submit from jobs, Airflow tasks and tfspark) handles a few
# thousand rows and lives a minute: C2's compilation costs more than it saves there. The quick JIT alone halves
# the CPU of a small ETL job (62 s -> 30 s) and the features tests' time (docs/performance.md, "Test suite").
os.environ.setdefault("SPARK_SUBMIT_OPTS", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
# py4j logs "Closing down clientserver connection" from an atexit hook, after pytest closed the streams.
logging.getLogger("py4j").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite Airflow metadata database (in the session's throwaway AIRFLOW_HOME)."""
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], check=True,
                   stdout=subprocess.DEVNULL, env=dict(os.environ))
    return TEST_AIRFLOW_HOME


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A fresh single-node Apache Kafka broker on a free 127.0.0.1 port, with its own state directory: one per
    pytest worker (a start takes ~5 s once `make setup` resolved the jars and the first broker wrote its class
    archive)."""
    broker = EmbeddedBroker(state_dir=tmp_path_factory.mktemp("broker"), port=free_port())
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3-protocol server (moto's standalone server) on a free 127.0.0.1 port."""
    server = S3Server(tmp_path_factory.mktemp("s3") / "moto.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_lake(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Lake:
    """An empty lake in a fresh bucket of the S3 server, with this process's AWS variables pointing at it."""
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    bucket = f"lake-{secrets.token_hex(4)}"
    s3_server.create_bucket(bucket)
    return Lake.from_url(f"s3://{bucket}/lakeloop")


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    """An empty lake directory for one test."""
    path = tmp_path / "lake"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def movielens():
    """MovieLens 100K as fetched by `make setup` (real data; never committed)."""
    from lakeloop.config import load_settings
    from lakeloop.movielens import load_movielens

    return load_movielens(load_settings().dataset_dir)


@pytest.fixture(scope="session")
def spark():
    """One local Spark session (2 cores) shared by the tests that run Spark jobs in-process."""
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[2]").appName("lakeloop-tests")
               .config("spark.sql.shuffle.partitions", "4").config("spark.ui.enabled", "false")
               .getOrCreate())
    session.sparkContext.setLogLevel("WARN")
    yield session
    session.stop()


def _postgres_bin_dir() -> Path:
    """Where Debian's `postgresql` package keeps `initdb` and `postgres` (not on PATH there)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda path: int(path.parts[-3]))
    if not candidates:
        pytest.fail("PostgreSQL is not installed: run scripts/install-system-packages.sh")
    return candidates[-1].parent


@dataclass
class PostgresCluster:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (`initdb` into a temp dir), the server a child process.

    PostgreSQL refuses to run as root, so under root `initdb` and the server run as the `postgres` account
    that Debian's package creates. Password authentication (scram) as in production, no Unix socket in /run.
    """

    root: Path
    port: int
    password: str
    user: str = "lakeloop"
    process: subprocess.Popen | None = None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def url(self, database: str, driver: str = "postgresql") -> str:
        """The SQLAlchemy URL of `database` (`driver` e.g. `postgresql+psycopg2` for Airflow)."""
        return f"{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def execute(self, database: str, sql: str, params: tuple = ()) -> list[tuple]:
        """Run one statement in autocommit mode and return its rows (empty for statements without rows)."""
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                                      dbname=database, connect_timeout=5)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall() if cursor.description else []
        finally:
            connection.close()

    def start(self, timeout: float = 60.0) -> None:
        """`initdb`, then start the server and wait until it accepts a login."""
        import psycopg2

        bin_dir = _postgres_bin_dir()
        account = {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}
        if account:
            shutil.chown(self.root, **account)
        password_file = self.root / "password"
        password_file.write_text(self.password + "\n")
        if account:
            shutil.chown(password_file, **account)
        subprocess.run([str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", self.user, "--auth=scram-sha-256",
                        f"--pwfile={password_file}", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
                       check=True, capture_output=True, **account)
        with open(self.root / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [str(bin_dir / "postgres"), "-D", str(self.data_dir), "-h", "127.0.0.1", "-p", str(self.port),
                 "-k", str(self.root), "-c", "fsync=off", "-c", "full_page_writes=off"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **account)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode}: {self.root / 'server.log'}")
            try:
                self.execute("postgres", "SELECT 1")
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.2)

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown of the server we started (SIGINT to its pid), then remove the cluster."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A running throwaway PostgreSQL cluster on a free 127.0.0.1 port, removed after the session."""
    cluster = PostgresCluster(root=Path(tempfile.mkdtemp(prefix="lakeloop-postgres-")), port=free_port(),
                              password=secrets.token_urlsafe(16))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def feature_lake(spark, movielens, tmp_path_factory):
    """The first 2,000 MovieLens ratings as one day's raw partition, curated and turned into features."""
    from jobs import etl, features

    lake = tmp_path_factory.mktemp("feature-lake")
    write_catalog(movielens, lake)
    events = build_events(MovieLens(movielens.ratings.slice(0, 2000), movielens.movies), 1, FEATURE_DAY)
    replace_partition(Lake.from_url(str(lake)), RAW_RATINGS, FEATURE_DAY, events.cast(RATINGS_SCHEMA.output_schema),
                      {"written_by": "feature_lake"})
    etl.run(spark, lake, FEATURE_DAY)
    features.run(spark, lake, FEATURE_DAY, features.FeatureOptions(window_days=1))
    return lake


@pytest.fixture
def s3_feature_lake(feature_lake: Path, s3_lake: Lake) -> Lake:
    """An S3 lake holding a copy of `feature_lake`'s feature tables (Delta logs name files relative to the table,
    so a copied table is the same table)."""
    from pyarrow import fs as pafs

    from lakeloop.features import FEATURES

    pafs.copy_files(str(feature_lake / FEATURES), s3_lake.path(FEATURES), source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=s3_lake.filesystem)
    return s3_lake


@pytest.fixture
def store_model():
    """Puts a trained model file and its training summary into a day's model directory of a lake (local or S3), as
    the trainer does: the model saved locally, then uploaded."""
    from lakeloop.models import MODEL_FILE, TRAIN_SUMMARY, ModelDirectory

    def store(lake: Lake | Path, model_name: str, model_file: Path, summary: dict):
        directory = ModelDirectory.of(lake, model_name, FEATURE_DAY)
        directory.write_json(TRAIN_SUMMARY, summary)
        directory.files.put(str(model_file), MODEL_FILE)
        return directory

    return store


@pytest.fixture(scope="session")
def untrained_model():
    """Builds an FM from the day's spec with seeded random weights (a stand-in for `train_model`'s output)."""
    import keras

    from lakeloop.features import read_feature_spec
    from lakeloop.fm_model import FMHyperParameters, build_fm_model

    def build(lake, seed: int):
        keras.utils.set_random_seed(seed)
        return build_fm_model(read_feature_spec(lake, FEATURE_DAY), FMHyperParameters(factors=4, l2=0.03))

    return build


@pytest.fixture(scope="session")
def fitted_model(untrained_model):
    """Fits an FM in-process (Keras `fit`) on the day's training *and evaluation* examples: a model that beats
    the baselines on the evaluation set by construction, its rating better the more epochs it gets (its selection
    model is the same whatever the epochs), so the tests can choose whether the quality gate promotes it."""
    import keras
    import numpy as np
    import pyarrow as pa

    from lakeloop.features import model_inputs, read_features
    from lakeloop.fm_model import SELECTION_LAYERS, fm_loss, rating_model, training_model

    def fit(lake, epochs: int, seed: int = 1):
        model = untrained_model(lake, seed)
        examples = pa.concat_tables([read_features(lake, FEATURE_DAY, split) for split in ("train", "eval")])
        inputs, labels = model_inputs(examples), examples["label"].to_numpy()
        rated = rating_model(model)
        rated.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
        rated.fit(inputs, labels, batch_size=64, epochs=epochs, verbose=0)
        # then the selection model alone, the same whatever the rating's epochs (its negatives drawn once)
        for layer in model.layers:
            layer.trainable = layer.name in SELECTION_LAYERS
        negatives = np.random.default_rng(seed).integers(1, int(inputs["item_idx"].max()) + 1, (len(labels), 4))
        trained = training_model(model, negatives.shape[1])
        trained.compile(optimizer=keras.optimizers.Adam(0.01), loss=fm_loss(1.0))
        trained.fit({**inputs, "negative_items": negatives}, labels, batch_size=64, epochs=10, verbose=0)
        for layer in model.layers:
            layer.trainable = True
        return model

    return fit


LONGEST_MODULES = [
    "tests/dags/test_daily_retrain_scheduler.py",
    "tests/lakeloop/test_cli_run.py",
    "tests/tfspark/task/test_barrier.py",
    "tests/bench/test_feed_benchmark.py",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Start the longest modules first: `make test` gives each module whole to one of two workers
    (`--dist loadscope`), so they finish together only if the long ones do not come last."""
    def rank(item: pytest.Item) -> int:
        path = item.path.relative_to(REPO).as_posix()
        return LONGEST_MODULES.index(path) if path in LONGEST_MODULES else len(LONGEST_MODULES)

    items.sort(key=rank)
