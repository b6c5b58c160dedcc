"""What the Spark jobs share: atomic partition writes on both commit protocols (rename, manifest) — a write that
fails midway leaves the live data as it was, and readers take exactly the committed files — and the movie catalog
read with the lake's types."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyarrow import fs as pafs
from pyspark.sql import functions as F

from lakeloop.config import s3a_settings
from lakeloop.data_quality import DataQualityError
from lakeloop.lake import ATTEMPT_PREFIX, MANIFEST_NAME, Lake, timed_name
from lakeloop.names import MOVIES
from lakeloop.spark_jobs import (
    DAYS_STAGING_PREFIX,
    read_catalog,
    read_partitions,
    read_table,
    use_lake,
    utc_date,
    write_day_partitions,
    write_partition,
)

DAY = date(2026, 11, 20)


@pytest.fixture(params=["rename", "manifest"])
def any_lake(request, lake) -> Lake:
    """A local lake committing by rename, and one committing by manifest as on object stores."""
    return Lake.from_url(str(lake), manifest_commits=request.param == "manifest")


def fails_on_the_last_row(frame):
    """The same frame, but computing its last row raises inside the Spark write job."""
    return frame.withColumn("n", F.when(F.col("n") == 3, F.raise_error(F.lit("disk full"))).otherwise(F.col("n")))


def values(spark, lake: Lake, dataset: str, day: date, table: str = "") -> list[int]:
    return sorted(row["n"] for row in read_table(spark, lake, dataset, day, table).collect())


def listing(lake: Lake, directory: str) -> list[str]:
    """The names in a directory of the lake, attempt ids replaced by `_attempt-*`."""
    infos = lake.filesystem.get_file_info(pafs.FileSelector(lake.path(directory)))
    return sorted(f"{ATTEMPT_PREFIX}*" if info.base_name.startswith(ATTEMPT_PREFIX) else info.base_name
                  for info in infos)


def test_a_failed_partition_write_leaves_the_live_partition_and_no_leftovers(spark, any_lake):
    frame = spark.createDataFrame([(1,), (2,), (3,)], "n long")
    write_partition({"train": frame, "eval": frame.limit(1)}, any_lake, "things", DAY, {"rows": 3})

    with pytest.raises(Exception, match="disk full"):
        write_partition({"train": frame.limit(1), "eval": fails_on_the_last_row(frame)}, any_lake, "things", DAY,
                        {"rows": 1})

    assert values(spark, any_lake, "things", DAY, "train") == [1, 2, 3]
    assert values(spark, any_lake, "things", DAY, "eval") == [1]
    manifest = any_lake.read_manifest("things", DAY)
    assert manifest["rows"] == 3 and sum(entry["rows"] for entry in manifest["files"]) == 4
    assert listing(any_lake, "things") == ["dt=2026-11-20"]
    if any_lake.manifest_commits:
        assert listing(any_lake, "things/dt=2026-11-20") == [f"{ATTEMPT_PREFIX}*", MANIFEST_NAME]


def test_day_partitions_are_written_by_event_day_and_committed_whole(spark, any_lake):
    midnight = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp() * 1000)
    events = spark.createDataFrame([(1, midnight - 1), (2, midnight), (3, midnight + 43_200_000)], "n long, ms long")
    frame = events.withColumn("ts", F.timestamp_millis("ms")).withColumn("dt", utc_date("ts")).drop("ms", "ts")
    earlier = date(2026, 11, 19)
    manifests = {earlier: {"rows": 1}, DAY: {"rows": 2}, date(2026, 11, 18): {"rows": 0}}
    written = write_day_partitions(frame, any_lake, "events", manifests)

    assert written == [any_lake.uri(any_lake.partition("events", day)) for day in (earlier, DAY)]
    assert values(spark, any_lake, "events", earlier) == [1] and values(spark, any_lake, "events", DAY) == [2, 3]
    assert any_lake.read_manifest("events", DAY)["rows"] == 2
    both = read_partitions(spark, any_lake, "events", [date(2026, 11, 18), earlier, DAY])
    assert sorted((row["dt"], row["n"]) for row in both.collect()) == [(earlier, 1), (DAY, 2), (DAY, 3)]

    with pytest.raises(Exception, match="disk full"):
        write_day_partitions(fails_on_the_last_row(frame), any_lake, "events", manifests)
    assert values(spark, any_lake, "events", DAY) == [2, 3]
    assert listing(any_lake, "events") == ["dt=2026-11-19", "dt=2026-11-20"]


def test_a_concurrent_runs_staging_survives_and_a_killed_runs_is_removed(spark, any_lake):
    """Another run still moving its days out of its staging directory keeps it; one abandoned a day ago is gone."""
    live = any_lake.path("events", timed_name(DAYS_STAGING_PREFIX))
    killed = any_lake.path("events", f"{DAYS_STAGING_PREFIX}20000101T000000Z-{'0' * 16}")
    for directory in (live, killed):
        any_lake.filesystem.create_dir(f"{directory}/dt=2026-11-20", recursive=True)
        pq.write_table(pa.table({"n": pa.array([9], pa.int64())}), f"{directory}/dt=2026-11-20/part-0.parquet",
                       filesystem=any_lake.filesystem)

    write_day_partitions(spark.createDataFrame([(1, DAY)], "n long, dt date"), any_lake, "events", {DAY: {"rows": 1}})

    assert listing(any_lake, "events") == sorted([live.rsplit("/", 1)[1], "dt=2026-11-20"])
    assert values(spark, any_lake, "events", DAY) == [1]


def test_a_killed_attempt_is_never_read_and_a_rerun_supersedes_it(spark, lake):
    manifest_lake = Lake.from_url(str(lake), manifest_commits=True)
    frame = spark.createDataFrame([(1, DAY), (2, DAY)], "n long, dt date")
    write_day_partitions(frame, manifest_lake, "events", {DAY: {"rows": 2}})
    killed = f"{manifest_lake.partition('events', DAY)}/{ATTEMPT_PREFIX}killed"
    manifest_lake.filesystem.create_dir(killed)
    pq.write_table(pa.table({"n": pa.array([99], pa.int64())}), f"{killed}/part-0.parquet",
                   filesystem=manifest_lake.filesystem)

    assert values(spark, manifest_lake, "events", DAY) == [1, 2]
    write_day_partitions(frame, manifest_lake, "events", {DAY: {"rows": 2}})
    assert values(spark, manifest_lake, "events", DAY) == [1, 2]
    assert listing(manifest_lake, "events/dt=2026-11-20") == [f"{ATTEMPT_PREFIX}*", MANIFEST_NAME]
    assert not manifest_lake.filesystem.get_file_info(killed).type == pafs.FileType.Directory


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
