"""Compaction and VACUUM of the lake's Delta tables, on real tables on local disk and on a real S3 server (moto's)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from lakeloop.config import ConfigurationError, load_settings
from lakeloop.delta import (
    TableVersionUnavailableError,
    open_table,
    read_partition,
    replace_partition,
    storage_options,
    table_uri,
)
from lakeloop.delta_maintenance import maintain_table
from lakeloop.lake import Lake
from tests.delta_protocol import read_day

DAY, NEXT_DAY = date(2026, 11, 20), date(2026, 11, 21)
REWRITES = 3
APPENDED_FILES = 3  # per day, after its last rewrite: a day written in pieces, as many writer tasks do


def rows(first: int, count: int) -> pa.Table:
    """Prediction-like rows for users first .. first + count - 1."""
    users = list(range(first, first + count))
    return pa.table({"user_id": pa.array(users, pa.int64()), "item_id": [f"m{user}" for user in users]})


def crowded_table(lake: Lake, dataset: str = "predictions") -> dict[date, pa.Table]:
    """A table of two days, each rewritten REWRITES times (the replaced files stay on storage) and then holding
    1 + APPENDED_FILES small files; return each day's rows."""
    from deltalake import write_deltalake

    expected = {}
    for day_number, day in enumerate((DAY, NEXT_DAY)):
        for rewrite in range(REWRITES):
            replace_partition(lake, dataset, day, rows(1000 * day_number + 10 * rewrite, 5), {"rewrite": rewrite})
        pieces = [rows(1000 * day_number + 100 * (piece + 1), 4) for piece in range(APPENDED_FILES)]
        for piece in pieces:
            write_deltalake(table_uri(lake, dataset), piece.append_column("dt", pa.array([day.isoformat()] * 4)),
                            mode="append", storage_options=storage_options(lake))
        expected[day] = pa.concat_tables([rows(1000 * day_number + 10 * (REWRITES - 1), 5), *pieces])
    return expected


def sorted_rows(table: pa.Table) -> pa.Table:
    """The rows in user order (compaction keeps them, not necessarily the order of the files)."""
    return table.sort_by("user_id")


def stored_files(lake: Lake, dataset: str) -> int:
    """Data files on storage under the table, whether or not a version references them."""
    infos = lake.filesystem.get_file_info(pafs.FileSelector(lake.path(dataset), recursive=True))
    return sum(1 for info in infos if info.is_file and info.path.endswith(".parquet")
               and "/_delta_log/" not in info.path)


def test_compaction_leaves_one_file_a_day_with_the_same_rows_and_keeps_recent_versions(tmp_path):
    lake = Lake.from_url(str(tmp_path / "lake"))
    expected = crowded_table(lake)
    version_before = open_table(lake, "predictions").version()
    on_storage = stored_files(lake, "predictions")

    summary = maintain_table(lake, "predictions")

    assert summary["files_before"] == 2 * (1 + APPENDED_FILES) and summary["files_after"] == 2
    assert summary["days_compacted"] == [str(DAY), str(NEXT_DAY)]
    assert summary["version"] == open_table(lake, "predictions").version() > version_before
    table = Path(table_uri(lake, "predictions"))
    for day, day_rows in expected.items():
        assert sorted_rows(read_partition(lake, "predictions", day)).equals(sorted_rows(day_rows))
        assert sorted_rows(read_day(table, day)).equals(sorted_rows(day_rows))
    # the default retention (168 hours) deletes nothing written minutes ago: the version before still reads
    assert summary["files_removed"] == 0
    assert stored_files(lake, "predictions") == on_storage + 2
    assert sorted_rows(read_partition(lake, "predictions", DAY, version=version_before)).equals(
        sorted_rows(expected[DAY]))
    assert maintain_table(lake, "predictions")["days_compacted"] == [], "a compacted table has nothing to compact"


def test_a_forced_vacuum_at_retention_0_deletes_what_no_version_references_and_old_versions_fail_clearly(tmp_path):
    lake = Lake.from_url(str(tmp_path / "lake"))
    expected = crowded_table(lake)
    on_storage = stored_files(lake, "predictions")

    summary = maintain_table(lake, "predictions", retention_hours=0, force_short_retention=True)

    assert stored_files(lake, "predictions") == summary["files_after"] == 2
    assert summary["files_removed"] == on_storage  # every file written before compaction: none is live now
    for day, day_rows in expected.items():
        assert sorted_rows(read_partition(lake, "predictions", day)).equals(sorted_rows(day_rows))
    with pytest.raises(TableVersionUnavailableError, match=r"predictions version 0 can no longer be read for "
                                                           r"2026-11-20: VACUUM .* retention of 0 hours"):
        read_partition(lake, "predictions", DAY, version=0)


def test_a_retention_under_an_hour_is_refused_unless_forced_and_changes_nothing(tmp_path):
    lake = Lake.from_url(str(tmp_path / "lake"))
    crowded_table(lake)
    version = open_table(lake, "predictions").version()
    on_storage = stored_files(lake, "predictions")

    with pytest.raises(ValueError, match=r"retention of 0 hours is refused: .* LAKELOOP_DELTA_RETENTION_HOURS to 1 "
                                         r"or more \(default 168\)"):
        maintain_table(lake, "predictions", retention_hours=0)
    assert open_table(lake, "predictions").version() == version
    assert stored_files(lake, "predictions") == on_storage


def test_the_retention_setting_is_read_and_checked_like_the_others():
    assert load_settings({}).delta_retention_hours == 168
    assert load_settings({"LAKELOOP_DELTA_RETENTION_HOURS": "24"}).delta_retention_hours == 24
    for bad in ("0", "-1", "1.5", "a week"):
        with pytest.raises(ConfigurationError, match=rf"LAKELOOP_DELTA_RETENTION_HOURS='{bad}': a whole number of "
                                                     r"hours >= 1 \(168 by default\)"):
            load_settings({"LAKELOOP_DELTA_RETENTION_HOURS": bad})


def test_a_table_the_lake_does_not_hold_yet_has_nothing_to_maintain(tmp_path):
    assert maintain_table(Lake.from_url(str(tmp_path / "lake")), "embeddings/users") == {
        "table": "embeddings/users", "exists": False}


def test_an_s3_table_is_compacted_and_vacuumed_too(s3_lake):
    expected = crowded_table(s3_lake, "embeddings/items")

    summary = maintain_table(s3_lake, "embeddings/items", retention_hours=0, force_short_retention=True)

    assert summary["files_before"] == 2 * (1 + APPENDED_FILES) and summary["files_after"] == 2
    assert stored_files(s3_lake, "embeddings/items") == 2
    for day, day_rows in expected.items():
        assert sorted_rows(read_partition(s3_lake, "embeddings/items", day)).equals(sorted_rows(day_rows))
    with pytest.raises(TableVersionUnavailableError, match="VACUUM .* retention of 0 hours"):
        read_partition(s3_lake, "embeddings/items", DAY, version=1)


def test_an_unreachable_store_fails_instead_of_having_nothing_to_do(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "lakeloop")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "lakeloop")
    monkeypatch.setenv("AWS_REGION", "us-east-1")

    with pytest.raises(OSError, match="127.0.0.1:1"):
        maintain_table(Lake.from_url("s3://nowhere/lakeloop"), "predictions")
