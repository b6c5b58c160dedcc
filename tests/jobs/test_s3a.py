"""The Spark jobs on an `s3://` lake, for real: ETL and features started by spark-submit as the DAG starts them,
reading and committing through Hadoop's s3a connector (the jars `make setup` resolved into jvm/lib/spark/) against
the moto S3 server, write the same rows as on a local lake."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lakeloop.config import PROJECT_DIR
from lakeloop.features import FEATURES
from lakeloop.ingest.schema import RATINGS_SCHEMA
from lakeloop.lake import ATTEMPT_PREFIX, Lake
from lakeloop.movielens import MovieLens
from lakeloop.names import CURATED_RATINGS, RAW_RATINGS
from lakeloop.replay import build_events, write_catalog
from lakeloop.spark_conf import spark_submit_conf
from tests.conftest import FEATURE_DAY
from tfspark.driver.submit import default_spark_submit

JOBS = PROJECT_DIR / "jobs"


def submit(job: str, lake: Lake, *args: str) -> subprocess.CompletedProcess:
    """spark-submit the job as the DAG's SparkSubmitOperator does (local master, the project's Spark defaults, this
    process's AWS variables), with the conf `spark_submit_conf` gives for the lake."""
    conf = [item for key, value in spark_submit_conf(lake).items() for item in ("--conf", f"{key}={value}")]
    command = [default_spark_submit(), "--master", "local[2]", *conf, str(JOBS / job),
               "--lake", lake.url, "--day", FEATURE_DAY.isoformat(), *args]
    env = {**os.environ, "SPARK_CONF_DIR": str(PROJECT_DIR / "conf" / "spark"), "PYSPARK_PYTHON": sys.executable,
           "PYTHONPATH": str(PROJECT_DIR)}
    return subprocess.run(command, env=env, capture_output=True, text=True, cwd=PROJECT_DIR)


def tables(lake: Lake, dataset: str) -> dict[str, pa.Table]:
    """Each table (subdirectory) of the day's committed partition, rows sorted, as the lake's manifest names them."""
    partition = lake.partition(dataset, FEATURE_DAY)
    by_table: dict[str, list[str]] = {}
    for path in lake.partition_files(dataset, FEATURE_DAY):
        name = path[len(partition) + 1:]
        name = name.split("/", 1)[1] if name.startswith(ATTEMPT_PREFIX) else name
        by_table.setdefault(name.rpartition("/")[0], []).append(path)
    result = {}
    for table, files in by_table.items():
        rows = pq.ParquetDataset(files, filesystem=lake.filesystem, partitioning=None).read()
        sortable = [name for name in rows.column_names if not pa.types.is_nested(rows.schema.field(name).type)]
        result[table] = rows.sort_by([(name, "ascending") for name in sortable])
    return result


@pytest.fixture
def s3_raw_lake(s3_lake: Lake, movielens: MovieLens) -> Lake:
    """An S3 lake holding what `feature_lake` started from: the catalog and one day's raw ratings, committed."""
    write_catalog(movielens, s3_lake)
    events = build_events(MovieLens(movielens.ratings.slice(0, 2000), movielens.movies), 1, FEATURE_DAY)
    with s3_lake.staged_partition(RAW_RATINGS, FEATURE_DAY) as staged:
        with s3_lake.filesystem.open_output_stream(f"{staged.directory}/part-0.parquet") as target:
            pq.write_table(events.cast(RATINGS_SCHEMA.output_schema), target)
    return s3_lake


def test_etl_and_features_on_s3_through_s3a_write_what_they_write_on_a_local_lake(feature_lake: Path,
                                                                                   s3_raw_lake: Lake):
    etl = submit("etl.py", s3_raw_lake)
    assert etl.returncode == 0, etl.stderr[-5000:]
    features = submit("features.py", s3_raw_lake, "--window-days", "1")
    assert features.returncode == 0, features.stderr[-5000:]

    local = Lake.from_url(str(feature_lake))
    for dataset in (CURATED_RATINGS, FEATURES):
        on_s3, on_disk = tables(s3_raw_lake, dataset), tables(local, dataset)
        assert on_s3.keys() == on_disk.keys(), dataset
        for table in on_disk:
            assert on_s3[table].equals(on_disk[table]), f"{dataset}/{table}"


def test_an_s3_lake_without_the_s3a_jars_is_refused_naming_make_setup(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"holds no hadoop-aws-\*\.jar: run `make setup`"):
        spark_submit_conf("s3://bucket/lake", jars_dir=tmp_path)


def test_a_local_lake_needs_no_extra_jars(tmp_path: Path):
    assert spark_submit_conf(Lake.from_url(str(tmp_path)), jars_dir=tmp_path) == {}
    assert spark_submit_conf("s3://bucket/lake")["spark.jars"].count("hadoop-aws-3.5.0.jar") == 1
