"""What the Spark jobs share: a day's write is one Delta commit — a write that fails midway leaves the committed day
as it was, and readers take exactly the files the log names — and the movie catalog read with the lake's types."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyarrow import fs as pafs
from pyspark.sql import functions as F

from lakeloop.config import s3a_settings
from lakeloop.data_quality import DataQualityError
from lakeloop.delta import partition_summary, read_partition
from lakeloop.lake import Lake, timed_name
from lakeloop.names import MOVIES
from lakeloop.spark_jobs import (
    DAYS_STAGING_PREFIX,
    SPARK_ATTEMPT_PREFIX,
    read_catalog,
    read_partitions,
    read_table,
    use_lake,
    utc_date,
    write_day_partitions,
    write_partition,
)
from tests import delta_protocol

DAY = date(2026, 11, 20)


@pytest.fixture
def delta_lake(lake) -> Lake:
    return Lake.from_url(str(lake))


def fails_on_the_last_row(frame):
    """The same frame, but computing its last row raises inside the Spark write job."""
    return frame.withColumn("n", F.when(F.col("n") == 3, F.raise_error(F.lit("disk full"))).otherwise(F.col("n")))


def values(spark, lake: Lake, dataset: str, day: date) -> list[int]:
    return sorted(row["n"] for row in read_table(spark, lake, dataset, day).collect())


def listing(lake: Lake, directory: str) -> list[str]:
    """The names in a directory of the lake, a Spark attempt's folder as `spark-*`."""
    infos = lake.filesystem.get_file_info(pafs.FileSelector(lake.path(directory)))
    return sorted(f"{SPARK_ATTEMPT_PREFIX}*" if info.base_name.startswith(SPARK_ATTEMPT_PREFIX) else info.base_name
                  for info in infos)


def test_a_failed_partition_write_leaves_the_committed_day_and_no_leftovers(spark, delta_lake):
    frame = spark.createDataFrame([(1,), (2,), (3,)], "n long")
    first = write_partition(frame, delta_lake, "things", DAY, {"rows": 3})

    with pytest.raises(Exception, match="disk full"):
        write_partition(fails_on_the_last_row(frame), delta_lake, "things", DAY, {"rows": 1})

    assert values(spark, delta_lake, "things", DAY) == [1, 2, 3]
    assert partition_summary(delta_lake, "things", DAY) == {"rows": 3, "table_version": first.version}
    assert listing(delta_lake, "things") == ["_delta_log", "dt=2026-11-20"]
    assert listing(delta_lake, "things/dt=2026-11-20") == [f"{SPARK_ATTEMPT_PREFIX}*"]
    assert delta_protocol.read_day(Path(delta_lake.path("things")), DAY).column("n").to_pylist() == [1, 2, 3]


def test_day_partitions_are_written_by_event_day_and_committed_whole(spark, delta_lake):
    midnight = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp() * 1000)
    events = spark.createDataFrame([(1, midnight - 1), (2, midnight), (3, midnight + 43_200_000)], "n long, ms long")
    frame = events.withColumn("ts", F.timestamp_millis("ms")).withColumn("dt", utc_date("ts")).drop("ms", "ts")
    earlier = date(2026, 11, 19)
    summaries = {earlier: {"rows": 1}, DAY: {"rows": 2}, date(2026, 11, 18): {"rows": 0}}
    written = write_day_partitions(frame, delta_lake, "events", summaries)

    assert [commit.uri for commit in written] == [delta_lake.uri(delta_lake.path("events"))] * 2
    assert values(spark, delta_lake, "events", earlier) == [1] and values(spark, delta_lake, "events", DAY) == [2, 3]
    assert partition_summary(delta_lake, "events", DAY)["rows"] == 2
    both = read_partitions(spark, delta_lake, "events", [date(2026, 11, 18), earlier, DAY])
    assert sorted((row["dt"], row["n"]) for row in both.collect()) == [(earlier, 1), (DAY, 2), (DAY, 3)]

    with pytest.raises(Exception, match="disk full"):
        write_day_partitions(fails_on_the_last_row(frame), delta_lake, "events", summaries)
    assert values(spark, delta_lake, "events", DAY) == [2, 3]
    assert listing(delta_lake, "events") == ["_delta_log", "dt=2026-11-19", "dt=2026-11-20"]


def test_a_concurrent_runs_staging_survives_and_a_killed_runs_is_removed(spark, delta_lake):
    """Another run still moving its days out of its staging directory keeps it; one abandoned a day ago is gone."""
    live = delta_lake.path("events", timed_name(DAYS_STAGING_PREFIX))
    killed = delta_lake.path("events", f"{DAYS_STAGING_PREFIX}20000101T000000Z-{'0' * 16}")
    for directory in (live, killed):
        delta_lake.filesystem.create_dir(f"{directory}/dt=2026-11-20", recursive=True)
        pq.write_table(pa.table({"n": pa.array([9], pa.int64())}), f"{directory}/dt=2026-11-20/part-0.parquet",
                       filesystem=delta_lake.filesystem)

    write_day_partitions(spark.createDataFrame([(1, DAY)], "n long, dt date"), delta_lake, "events", {DAY: {"rows": 1}})

    assert listing(delta_lake, "events") == sorted([live.rsplit("/", 1)[1], "_delta_log", "dt=2026-11-20"])
    assert values(spark, delta_lake, "events", DAY) == [1]


def test_a_killed_attempt_is_never_read_and_a_rerun_replaces_the_day(spark, delta_lake):
    frame = spark.createDataFrame([(1, DAY), (2, DAY)], "n long, dt date")
    write_day_partitions(frame, delta_lake, "events", {DAY: {"rows": 2}})
    killed = f"{delta_lake.partition('events', DAY)}/{SPARK_ATTEMPT_PREFIX}killed"
    delta_lake.filesystem.create_dir(killed)
    pq.write_table(pa.table({"n": pa.array([99], pa.int64())}), f"{killed}/part-0.parquet",
                   filesystem=delta_lake.filesystem)

    assert values(spark, delta_lake, "events", DAY) == [1, 2]
    rerun = write_day_partitions(frame, delta_lake, "events", {DAY: {"rows": 2}})
    assert values(spark, delta_lake, "events", DAY) == [1, 2]
    assert read_partition(delta_lake, "events", DAY, version=rerun[0].version - 1).column("n").to_pylist() == [1, 2]
    assert delta_protocol.read_day(Path(delta_lake.path("events")), DAY).column("n").to_pylist() == [1, 2]


def test_s3_lakes_get_the_s3a_settings_from_the_aws_variables(spark, lake, monkeypatch):
    environ = {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000", "AWS_REGION": "eu-west-1",
               "AWS_ACCESS_KEY_ID": "lakeloop", "AWS_SECRET_ACCESS_KEY": "not-a-secret"}
    assert s3a_settings(environ) == {
        "fs.s3a.endpoint": "http://127.0.0.1:9000", "fs.s3a.path.style.access": "true",
        "fs.s3a.connection.ssl.enabled": "false", "fs.s3a.endpoint.region": "eu-west-1",
        "fs.s3a.access.key": "lakeloop", "fs.s3a.secret.key": "not-a-secret",
        "fs.s3a.aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"}
    assert s3a_settings({}) == {}

    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    use_lake(spark, Lake.from_url(str(lake)))
    assert spark.conf.get("fs.s3a.endpoint", None) is None
    s3_lake = Lake.from_url("s3://bucket/prefix")
    assert s3_lake.spark_uri(s3_lake.partition("raw/ratings", DAY)) == "s3a://bucket/prefix/raw/ratings/dt=2026-11-20"
    try:
        use_lake(spark, s3_lake)
        assert {key: spark.conf.get(key) for key in s3a_settings()} == s3a_settings()
    finally:
        for key in s3a_settings():
            spark.conf.unset(key)


def write_catalog_file(lake: Lake, columns: dict[str, pa.Array]) -> None:
    lake.filesystem.create_dir(lake.path(MOVIES), recursive=True)
    pq.write_table(pa.table(columns), lake.path(MOVIES, "movies.parquet"), filesystem=lake.filesystem)


def test_an_integer_catalog_is_read_with_the_lakes_string_ids(spark, lake):
    lake = Lake.from_url(str(lake))
    write_catalog_file(lake, {"item_id": pa.array([7, 42], pa.int64()), "title": pa.array(["A", "B"]),
                              "year": pa.array([1995, None], pa.int64()),
                              "genres": pa.array([["Drama"], []], pa.list_(pa.string()))})
    catalog = read_catalog(spark, lake)
    assert catalog.schema.simpleString() == "struct<item_id:string,title:string,year:int,genres:array<string>>"
    assert sorted(tuple(row) for row in catalog.select("item_id", "year").collect()) == [("42", None), ("7", 1995)]


@pytest.mark.parametrize(("column", "values", "problem"), [
    ("item_id", pa.array([7.0, 42.0]), "item_id is double"),
    ("title", None, "title is missing"),
    ("genres", pa.array(["Drama", ""]), "genres is string"),
])
def test_a_catalog_that_does_not_fit_the_lake_is_refused_naming_the_column(spark, lake, column, values, problem):
    lake = Lake.from_url(str(lake))
    columns = {"item_id": pa.array(["7", "42"]), "title": pa.array(["A", "B"]), "year": pa.array([1995, 1996]),
               "genres": pa.array([["Drama"], []], pa.list_(pa.string()))}
    if values is None:
        del columns[column]
    else:
        columns[column] = values
    write_catalog_file(lake, columns)
    with pytest.raises(DataQualityError, match=f"{problem}.*Rewrite it with the columns item_id string"):
        read_catalog(spark, lake)
