"""The Spark jobs on an `s3://` lake, for real: ETL, features and batch prediction started by spark-submit as the DAG
starts them, reading and committing through Hadoop's s3a connector (the jars `make setup` resolved into
jvm/lib/spark/) against the moto S3 server, write the same rows as on a local lake."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from lakeloop.config import PROJECT_DIR
from lakeloop.delta import read_partition, replace_partition
from lakeloop.features import read_feature_summary
from lakeloop.ingest.schema import RATINGS_SCHEMA
from lakeloop.lake import Lake
from lakeloop.movielens import MovieLens
from lakeloop.names import (
    CURATED_RATINGS,
    FEATURE_DATASETS,
    ITEM_EMBEDDINGS,
    PREDICTIONS,
    RAW_RATINGS,
    USER_EMBEDDINGS,
)
from lakeloop.replay import build_events, write_catalog
from lakeloop.spark_conf import spark_submit_conf
from tests.champions import register_champion
from tests.conftest import FEATURE_DAY
from tfspark.driver.submit import default_spark_submit

JOBS = PROJECT_DIR / "jobs"
MODEL = "s3a-test-fm"
GENERATED_AT = "2026-11-21T00:00:00+00:00"


def submit(job: str, lake: Lake, *args: str) -> subprocess.CompletedProcess:
    """spark-submit the job as the DAG's SparkSubmitOperator does (local master, the project's Spark defaults, this
    process's AWS variables), with the conf `spark_submit_conf` gives for the lake."""
    conf = [item for key, value in spark_submit_conf(lake).items() for item in ("--conf", f"{key}={value}")]
    command = [default_spark_submit(), "--master", "local[2]", *conf, str(JOBS / job),
               "--lake", lake.url, "--day", FEATURE_DAY.isoformat(), *args]
    env = {**os.environ, "SPARK_CONF_DIR": str(PROJECT_DIR / "conf" / "spark"), "PYSPARK_PYTHON": sys.executable,
           "PYTHONPATH": str(PROJECT_DIR)}
    return subprocess.run(command, env=env, capture_output=True, text=True, cwd=PROJECT_DIR)


def rows_of(lake: Lake, dataset: str) -> pa.Table:
    """The day's committed rows of a Delta table of the lake, sorted by every column that sorts."""
    rows = read_partition(lake, dataset, FEATURE_DAY)
    sortable = [name for name in rows.column_names if not pa.types.is_nested(rows.schema.field(name).type)]
    return rows.sort_by([(name, "ascending") for name in sortable])


@pytest.fixture
def s3_raw_lake(s3_lake: Lake, movielens: MovieLens) -> Lake:
    """An S3 lake holding what `feature_lake` started from: the catalog and one day's raw ratings, committed."""
    write_catalog(movielens, s3_lake)
    events = build_events(MovieLens(movielens.ratings.slice(0, 2000), movielens.movies), 1, FEATURE_DAY)
    replace_partition(s3_lake, RAW_RATINGS, FEATURE_DAY, events.cast(RATINGS_SCHEMA.output_schema),
                      {"written_by": "s3_raw_lake"})
    return s3_lake


@pytest.fixture
def local_champion(spark, feature_lake: Path, untrained_model, tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> Lake:
    """A copy of the local feature lake whose day's model is registered and aliased `champion` in a fresh MLflow
    store (MLFLOW_TRACKING_URI, which the spark-submitted jobs inherit), its predictions of the day written."""
    from jobs import batch_predict

    lake = tmp_path / "local-lake"
    shutil.copytree(feature_lake, lake)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    register_champion(lake, untrained_model(lake, seed=2), MODEL, FEATURE_DAY, tracking)
    batch_predict.run(spark, lake, FEATURE_DAY, batch_predict.PredictOptions(model_name=MODEL,
                                                                           generated_at=GENERATED_AT))
    return Lake.from_url(str(lake))


@pytest.mark.slow
def test_the_spark_jobs_on_s3_through_s3a_write_what_they_write_on_a_local_lake(s3_raw_lake: Lake,
                                                                                local_champion: Lake):
    etl = submit("etl.py", s3_raw_lake)
    assert etl.returncode == 0, etl.stderr[-5000:]
    features = submit("features.py", s3_raw_lake, "--window-days", "1")
    assert features.returncode == 0, features.stderr[-5000:]
    for dataset in (CURATED_RATINGS, *FEATURE_DATASETS):
        assert rows_of(s3_raw_lake, dataset).equals(rows_of(local_champion, dataset)), dataset
    spec = read_feature_summary(s3_raw_lake, FEATURE_DAY)["spec"]
    assert spec == read_feature_summary(local_champion, FEATURE_DAY)["spec"]

    predict = submit("batch_predict.py", s3_raw_lake, "--model-name", MODEL, "--generated-at", GENERATED_AT)
    assert predict.returncode == 0, predict.stderr[-5000:]
    for dataset in (PREDICTIONS, USER_EMBEDDINGS, ITEM_EMBEDDINGS):
        assert rows_of(s3_raw_lake, dataset).equals(rows_of(local_champion, dataset)), dataset
    assert rows_of(s3_raw_lake, PREDICTIONS).num_rows > 0


def test_an_s3_lake_without_the_s3a_jars_is_refused_naming_make_setup(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"holds no hadoop-aws-\*\.jar: run `make setup`"):
        spark_submit_conf("s3://bucket/lake", jars_dir=tmp_path)


def test_a_local_lake_needs_no_extra_jars(tmp_path: Path):
    assert spark_submit_conf(Lake.from_url(str(tmp_path)), jars_dir=tmp_path) == {}
    assert spark_submit_conf("s3://bucket/lake")["spark.jars"].count("hadoop-aws-3.5.0.jar") == 1
