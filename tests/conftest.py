"""Fixtures shared by the whole suite: a real Kafka-protocol broker and an isolated project state."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lakeloop.services import EmbeddedBroker, free_port

REPO = Path(__file__).resolve().parents[1]
TEST_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="lakeloop-airflow-"))
# Airflow reads its configuration when first imported: point it at a throwaway home before any test does.
os.environ["AIRFLOW_HOME"] = str(TEST_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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
    """A fresh noida-db broker on a free 127.0.0.1 port, with its own data directory."""
    broker = EmbeddedBroker(state_dir=tmp_path_factory.mktemp("broker"), port=free_port())
    broker.start()
    yield broker
    broker.stop()


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
