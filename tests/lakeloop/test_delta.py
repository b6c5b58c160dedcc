"""Delta tables of the lake through delta-rs, on a local lake and on a real S3 server (moto's)."""

from __future__ import annotations

import threading
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lakeloop.delta import partition_summary, read_partition, replace_partition, storage_options, table_uri
from lakeloop.lake import ConcurrentWriteError, Lake
from tests.delta_protocol import read_day

DAY, NEXT_DAY = date(2026, 11, 20), date(2026, 11, 21)


def rows(*users: int) -> pa.Table:
    """A few prediction-like rows."""
    return pa.table({"user_id": pa.array(users, pa.int64()), "item_id": [f"m{user}" for user in users]})


def test_a_rerun_of_a_day_replaces_its_rows_and_leaves_the_other_days(tmp_path):
    lake = Lake.from_url(str(tmp_path / "lake"))
    replace_partition(lake, "predictions", DAY, rows(1, 2), {"rows": 2, "run": 1})
    replace_partition(lake, "predictions", NEXT_DAY, rows(3), {"rows": 1})
    replace_partition(lake, "predictions", DAY, rows(1, 2), {"rows": 2, "run": 2})

    assert read_partition(lake, "predictions", DAY).equals(rows(1, 2))
    assert read_partition(lake, "predictions", NEXT_DAY).equals(rows(3))
    assert read_partition(lake, "predictions", date(2026, 11, 22)) is None
    assert partition_summary(lake, "predictions", DAY) == {"rows": 2, "run": 2}
    assert partition_summary(lake, "predictions", NEXT_DAY) == {"rows": 1}
    table = Path(table_uri(lake, "predictions"))
    assert read_day(table, DAY).equals(rows(1, 2)) and read_day(table, NEXT_DAY).equals(rows(3))


def test_a_lake_without_the_table_reads_as_none(tmp_path):
    lake = Lake.from_url(str(tmp_path / "lake"))
    assert read_partition(lake, "predictions", DAY) is None
    assert partition_summary(lake, "predictions", DAY) is None


def test_files_a_killed_writer_left_behind_are_never_read(tmp_path):
    lake = Lake.from_url(str(tmp_path / "lake"))
    replace_partition(lake, "predictions", DAY, rows(1, 2), {"rows": 2})
    # what a writer killed before its commit leaves: data files in the partition, no log entry naming them
    pq.write_table(rows(7, 8, 9), Path(lake.partition("predictions", DAY)) / "part-killed.parquet")

    assert read_partition(lake, "predictions", DAY).equals(rows(1, 2))
    assert read_day(Path(table_uri(lake, "predictions")), DAY).equals(rows(1, 2))


def test_rows_of_another_schema_are_refused_and_change_nothing(tmp_path):
    lake = Lake.from_url(str(tmp_path / "lake"))
    replace_partition(lake, "predictions", DAY, rows(1, 2), {"rows": 2})
    other = pa.table({"user_id": pa.array([5], pa.int64()), "item_id": pa.array([5], pa.int64()),
                      "score": [0.5]})

    with pytest.raises(ValueError, match=r"predictions of 2026-11-20 could not be written .*user_id long, item_id "
                                         r"string.*this write changed nothing"):
        replace_partition(lake, "predictions", DAY, other, {"rows": 1})
    assert read_partition(lake, "predictions", DAY).equals(rows(1, 2))


def test_two_writers_of_one_day_never_leave_both_rows(tmp_path):
    lake = Lake.from_url(str(tmp_path / "lake"))
    replace_partition(lake, "predictions", DAY, rows(0), {"rows": 1})
    errors: list[BaseException] = []

    def write(users: tuple[int, ...]) -> None:
        try:
            replace_partition(lake, "predictions", DAY, rows(*users), {"rows": len(users)})
        except BaseException as error:  # noqa: BLE001 - collected and checked below
            errors.append(error)

    for _ in range(5):
        writers = [threading.Thread(target=write, args=(users,)) for users in ((1, 2), (3, 4, 5))]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join()
        assert read_partition(lake, "predictions", DAY).column("user_id").to_pylist() in ([1, 2], [3, 4, 5])
    assert errors, "two writers of one day at once: one commit must have conflicted"
    assert all(isinstance(error, ConcurrentWriteError) for error in errors), errors


def test_an_s3_lake_holds_delta_tables_too(s3_lake):
    replace_partition(s3_lake, "predictions", DAY, rows(1, 2), {"rows": 2})
    replace_partition(s3_lake, "predictions", DAY, rows(4), {"rows": 1})

    assert read_partition(s3_lake, "predictions", DAY).equals(rows(4))
    assert partition_summary(s3_lake, "predictions", DAY) == {"rows": 1}
    assert table_uri(s3_lake, "predictions") == f"{s3_lake.url}/predictions"


def test_an_unreachable_store_fails_instead_of_reading_as_no_table(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "lakeloop")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "lakeloop")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    lake = Lake.from_url("s3://nowhere/lakeloop")

    with pytest.raises(OSError, match="127.0.0.1:1"):
        read_partition(lake, "predictions", DAY)


def test_s3_options_come_from_the_standard_aws_variables(s3_lake, tmp_path):
    env = {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000", "AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "k",
           "AWS_SECRET_ACCESS_KEY": "s"}
    assert storage_options(s3_lake, env) == {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_ALLOW_HTTP": "true",
                                          "AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "k",
                                          "AWS_SECRET_ACCESS_KEY": "s"}
    assert storage_options(Lake.from_url(str(tmp_path)), env) == {}
