"""Delta tables of the lake through delta-rs, on a local lake and on a real S3 server (moto's)."""

from __future__ import annotations

import json
import threading
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lakeloop.delta import (
    SUMMARY_KEY,
    TableVersionUnavailableError,
    adopt_manifest_partitions,
    commit_partition_files,
    open_table,
    partition_files,
    partition_summary,
    read_partition,
    replace_partition,
    storage_options,
    table_history,
    table_uri,
)
from lakeloop.lake import ConcurrentWriteError, Lake
from tests.delta_protocol import read_day
from tests.legacy_manifest import write_manifest_day

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
    assert partition_summary(lake, "predictions", DAY) == {"rows": 2, "run": 2, "table_version": 2}
    assert partition_summary(lake, "predictions", NEXT_DAY) == {"rows": 1, "table_version": 1}
    table = Path(table_uri(lake, "predictions"))
    assert read_day(table, DAY).equals(rows(1, 2)) and read_day(table, NEXT_DAY).equals(rows(3))


def test_a_past_version_reads_the_rows_that_version_committed(tmp_path):
    lake = Lake.from_url(str(tmp_path / "lake"))
    first = replace_partition(lake, "predictions", DAY, rows(1, 2), {"rows": 2})
    other_day = replace_partition(lake, "predictions", NEXT_DAY, rows(3), {"rows": 1})
    rerun = replace_partition(lake, "predictions", DAY, rows(4, 5, 6), {"rows": 3})

    assert (first.version, other_day.version, rerun.version) == (0, 1, 2)
    assert first.uri == rerun.uri == lake.uri(lake.path("predictions"))
    assert read_partition(lake, "predictions", DAY, version=first.version).equals(rows(1, 2))
    assert read_partition(lake, "predictions", DAY, version=other_day.version).equals(rows(1, 2))
    assert read_partition(lake, "predictions", DAY, version=rerun.version).equals(rows(4, 5, 6))
    assert read_partition(lake, "predictions", DAY).equals(rows(4, 5, 6))
    assert read_partition(lake, "predictions", NEXT_DAY, version=first.version) is None
    assert [(commit["version"], commit["operation"], commit["predicate"])
            for commit in table_history(lake, "predictions")] == [
        (2, "WRITE", "dt = '2026-11-20'"), (1, "WRITE", "dt = '2026-11-21'"), (0, "WRITE", "dt = '2026-11-20'")]
    with pytest.raises(TableVersionUnavailableError, match=r"predictions has no version 3 to read: its newest is 2"):
        read_partition(lake, "predictions", DAY, version=3)


def test_each_commit_reports_the_version_it_made_while_another_day_commits_at_the_same_time(tmp_path):
    lake = Lake.from_url(str(tmp_path / "lake"))
    replace_partition(lake, "predictions", DAY, rows(0), {"writer": "first"})
    commits = {}

    def write(day: date) -> None:
        for run in range(10):
            commits[(str(day), run)] = replace_partition(lake, "predictions", day, rows(run), {"run": run})

    writers = [threading.Thread(target=write, args=(day,)) for day in (DAY, NEXT_DAY)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()

    carried = {commit["version"]: (commit["operationParameters"]["predicate"], json.loads(commit[SUMMARY_KEY]))
               for commit in open_table(lake, "predictions").history()}
    assert len(commits) == 20 and len({commit.version for commit in commits.values()}) == 20
    for (day, run), commit in commits.items():
        assert carried[commit.version] == (f"dt = '{day}'", {"run": run}), (day, run, commit)


def test_a_lake_without_the_table_reads_as_none(tmp_path):
    lake = Lake.from_url(str(tmp_path / "lake"))
    assert read_partition(lake, "predictions", DAY) is None
    assert read_partition(lake, "predictions", DAY, version=0) is None
    assert partition_summary(lake, "predictions", DAY) is None
    assert table_history(lake, "predictions") is None


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
    assert partition_summary(s3_lake, "predictions", DAY) == {"rows": 1, "table_version": 1}
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


def written(lake: Lake, day: date, attempt: str, table: pa.Table) -> list[str]:
    """Write `table` as a writer that streams its own files does (under the day's folder of `raw/ratings`, in an
    attempt folder) and return its path relative to the table's root."""
    relative = f"dt={day.isoformat()}/{attempt}/part-00000.parquet"
    lake.filesystem.create_dir(lake.path("raw/ratings", relative).rsplit("/", 1)[0], recursive=True)
    with lake.filesystem.open_output_stream(lake.path("raw/ratings", relative)) as stream:
        pq.write_table(table, stream)
    return [relative]


def test_files_written_in_the_table_are_committed_as_the_day_and_a_rerun_replaces_them(tmp_path):
    lake = Lake.from_url(str(tmp_path / "lake"))
    first = commit_partition_files(lake, "raw/ratings", DAY, written(lake, DAY, "ingest-1", rows(1, 2)), {"run": 1})
    commit_partition_files(lake, "raw/ratings", NEXT_DAY, written(lake, NEXT_DAY, "ingest-1", rows(3)), {"run": 1})
    rerun = commit_partition_files(lake, "raw/ratings", DAY, written(lake, DAY, "ingest-2", rows(4)), {"run": 2})

    assert (first.version, rerun.version) == (0, 2)
    table = Path(table_uri(lake, "raw/ratings"))
    assert read_day(table, DAY).equals(rows(4)) and read_day(table, NEXT_DAY).equals(rows(3))
    assert read_partition(lake, "raw/ratings", DAY).equals(rows(4))
    assert read_partition(lake, "raw/ratings", DAY, version=first.version).equals(rows(1, 2))
    assert partition_summary(lake, "raw/ratings", DAY) == {"run": 2, "table_version": 2}
    assert partition_summary(lake, "raw/ratings", NEXT_DAY) == {"run": 1, "table_version": 1}
    assert partition_files(lake, "raw/ratings", DAY) == [f"{table}/dt=2026-11-20/ingest-2/part-00000.parquet"]
    assert partition_files(lake, "raw/ratings", date(2026, 11, 22)) == []
    assert [(commit["version"], commit["predicate"]) for commit in table_history(lake, "raw/ratings")] == [
        (2, "dt = '2026-11-20'"), (1, "dt = '2026-11-21'"), (0, "dt = '2026-11-20'")]
    assert open_table(lake, "raw/ratings").metadata().partition_columns == ["dt"]


def test_files_of_an_attempt_never_committed_are_never_read(tmp_path):
    lake = Lake.from_url(str(tmp_path / "lake"))
    commit_partition_files(lake, "raw/ratings", DAY, written(lake, DAY, "ingest-1", rows(1, 2)), {"run": 1})
    written(lake, DAY, "ingest-killed", rows(7, 8, 9))

    assert read_day(Path(table_uri(lake, "raw/ratings")), DAY).equals(rows(1, 2))
    assert read_partition(lake, "raw/ratings", DAY).equals(rows(1, 2))


def test_committed_files_of_another_schema_are_refused_and_change_nothing(tmp_path):
    lake = Lake.from_url(str(tmp_path / "lake"))
    commit_partition_files(lake, "raw/ratings", DAY, written(lake, DAY, "ingest-1", rows(1, 2)), {"run": 1})
    other = pa.table({"user_id": pa.array(["u5"], pa.string())})

    with pytest.raises(ValueError, match=r"raw/ratings of 2026-11-21 could not be committed .*its schema is user_id "
                                         r"long, item_id string, dt string, the files' is user_id string.*changed "
                                         r"nothing"):
        commit_partition_files(lake, "raw/ratings", NEXT_DAY, written(lake, NEXT_DAY, "ingest-1", other), {})
    assert [field.name for field in open_table(lake, "raw/ratings").schema().fields] == ["user_id", "item_id", "dt"]
    assert read_partition(lake, "raw/ratings", NEXT_DAY) is None
    with pytest.raises(ValueError, match=r"not in raw/ratings's folder of 2026-11-20"):
        commit_partition_files(lake, "raw/ratings", DAY, ["dt=2026-11-21/ingest-1/part-00000.parquet"], {})


def test_files_written_in_an_s3_table_are_committed_as_the_day(s3_lake):
    commit_partition_files(s3_lake, "raw/ratings", DAY, written(s3_lake, DAY, "ingest-1", rows(1, 2)), {"run": 1})
    commit_partition_files(s3_lake, "raw/ratings", DAY, written(s3_lake, DAY, "ingest-2", rows(4)), {"run": 2})
    written(s3_lake, DAY, "ingest-killed", rows(7))

    assert read_partition(s3_lake, "raw/ratings", DAY).equals(rows(4))
    assert partition_summary(s3_lake, "raw/ratings", DAY) == {"run": 2, "table_version": 1}
    assert partition_files(s3_lake, "raw/ratings", DAY) == [
        s3_lake.path("raw/ratings", "dt=2026-11-20/ingest-2/part-00000.parquet")]


def test_the_maintenance_deletes_files_no_commit_names_and_keeps_the_committed_rows(tmp_path):
    from lakeloop.delta_maintenance import maintain_table

    lake = Lake.from_url(str(tmp_path / "lake"))
    commit_partition_files(lake, "raw/ratings", DAY, written(lake, DAY, "ingest-1", rows(1, 2)), {"run": 1})
    commit_partition_files(lake, "raw/ratings", DAY, written(lake, DAY, "ingest-2", rows(4)), {"run": 2})
    written(lake, DAY, "ingest-killed", rows(7, 8, 9))

    maintain_table(lake, "raw/ratings", retention_hours=0, force_short_retention=True)

    folder = Path(lake.partition("raw/ratings", DAY))
    assert [path.relative_to(folder).as_posix() for path in folder.rglob("*.parquet")] == [
        "ingest-2/part-00000.parquet"]  # the replaced run's and the killed run's files are deleted
    assert read_day(Path(table_uri(lake, "raw/ratings")), DAY).equals(rows(4))
    assert partition_summary(lake, "raw/ratings", DAY) == {"run": 2, "table_version": 1}


def test_days_an_s3_lake_committed_by_manifest_are_adopted_by_the_first_delta_commit(s3_lake):
    write_manifest_day(s3_lake, "raw/ratings", DAY, rows(1, 2), {"counts": {"written": 2}})

    assert adopt_manifest_partitions(s3_lake, "raw/ratings") == [DAY]
    assert adopt_manifest_partitions(s3_lake, "raw/ratings") == []  # once the table exists, nothing more
    assert read_partition(s3_lake, "raw/ratings", DAY).equals(rows(1, 2))
    assert partition_summary(s3_lake, "raw/ratings", DAY) == {"counts": {"written": 2}, "table_version": 0}
