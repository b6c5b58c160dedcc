"""The lake's layout: where a dataset's day lives, its URLs for logs, Spark and other tools, the Parquet files of a
folder, and how a writer's private folder is named so that a killed writer's can be told from a live one's."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq

from lakeloop.lake import ATTEMPT_TIME_FORMAT, Lake, is_abandoned, partition_path, timed_name, window_days


def test_partition_path_names_the_day(lake):
    assert partition_path(lake, "raw/ratings", date(2026, 11, 20)) == lake / "raw/ratings/dt=2026-11-20"


def test_window_days_end_on_the_day():
    assert window_days(date(2026, 3, 1), 3) == [date(2026, 2, 27), date(2026, 2, 28), date(2026, 3, 1)]


def test_lake_urls_name_their_paths(s3_lake, lake):
    local = Lake.from_url(str(lake))
    assert local.url == lake.as_uri() and local.is_local
    assert local.uri(local.partition("raw/ratings", date(2026, 11, 20))) == (
        f"file://{partition_path(lake, 'raw/ratings', date(2026, 11, 20))}")
    assert not s3_lake.is_local
    assert s3_lake.uri(s3_lake.partition("raw/ratings", date(2026, 11, 20))) == (
        f"{s3_lake.url}/raw/ratings/dt=2026-11-20")
    assert s3_lake.spark_uri(s3_lake.path("raw")) == f"s3a{s3_lake.url[2:]}/raw"


def test_parquet_files_of_a_folder_are_listed_and_moved_by_relative_path(s3_lake, lake):
    for where in (Lake.from_url(str(lake)), s3_lake):
        source, target = where.path("staging"), where.path("table", "dt=2026-11-20", "attempt")
        for name in ("a/part-0.parquet", "part-1.parquet"):
            where.filesystem.create_dir(f"{source}/{name}".rsplit("/", 1)[0], recursive=True)
            pq.write_table(pa.table({"n": [1]}), f"{source}/{name}", filesystem=where.filesystem)
        with where.filesystem.open_output_stream(f"{source}/.hidden.parquet") as stream:
            stream.write(b"not data")

        assert where.parquet_files(source) == ["a/part-0.parquet", "part-1.parquet"]
        assert where.move_files(source, target) == ["a/part-0.parquet", "part-1.parquet"]
        assert where.parquet_files(target) == ["a/part-0.parquet", "part-1.parquet"]
        assert where.parquet_files(source) == [] and where.parquet_files(where.path("nothing")) == []


def test_a_writers_folder_is_abandoned_a_day_after_it_started():
    now = datetime.now(UTC)

    def started(at: datetime) -> str:
        return f"spark-{at.strftime(ATTEMPT_TIME_FORMAT)}-{'0' * 16}"

    assert timed_name("spark-").startswith(f"spark-{now.strftime('%Y%m%d')}")
    assert not is_abandoned(timed_name("spark-"), "spark-", now)
    assert not is_abandoned(started(now - timedelta(hours=23)), "spark-", now)
    assert is_abandoned(started(now - timedelta(hours=25)), "spark-", now)
    assert is_abandoned("spark-x", "spark-", now)  # no start time: not a writer of this version
