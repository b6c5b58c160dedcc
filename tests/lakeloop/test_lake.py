"""Atomic partition writes: readers see the old complete partition or the new one, never a half."""

from __future__ import annotations

from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyarrow import fs as pafs

from lakeloop.lake import Lake, atomic_partition, clean_stale_staging, partition_path, window_days


def test_partition_path_names_the_day(lake):
    assert partition_path(lake, "raw/ratings", date(2026, 11, 20)) == lake / "raw/ratings/dt=2026-11-20"


def test_window_days_end_on_the_day():
    assert window_days(date(2026, 3, 1), 3) == [date(2026, 2, 27), date(2026, 2, 28), date(2026, 3, 1)]


def test_a_successful_write_replaces_the_previous_partition(lake):
    final = partition_path(lake, "raw/ratings", date(2026, 11, 20))
    with atomic_partition(final) as staged:
        (staged / "part-0").write_text("old")
    with atomic_partition(final) as staged:
        (staged / "part-0").write_text("new")
        assert (final / "part-0").read_text() == "old"
    assert (final / "part-0").read_text() == "new"
    assert sorted(p.name for p in final.parent.iterdir()) == ["dt=2026-11-20"]


def test_a_failed_write_leaves_the_previous_partition_untouched(lake):
    final = partition_path(lake, "raw/ratings", date(2026, 11, 20))
    with atomic_partition(final) as staged:
        (staged / "part-0").write_text("complete")
    with pytest.raises(RuntimeError), atomic_partition(final) as staged:
        (staged / "part-0").write_text("half")
        raise RuntimeError("killed mid-write")
    assert (final / "part-0").read_text() == "complete"
    assert sorted(p.name for p in final.parent.iterdir()) == ["dt=2026-11-20"]


def test_leftovers_of_killed_writers_are_cleaned(lake):
    dataset = lake / "raw/ratings"
    (dataset / ".staging-dt=2026-11-20-abcd").mkdir(parents=True)
    (dataset / "dt=2026-11-19").mkdir()
    clean_stale_staging(dataset)
    assert [p.name for p in dataset.iterdir()] == ["dt=2026-11-19"]


@pytest.fixture(params=["local", "s3"])
def any_lake(request, lake) -> Lake:
    """The same tests on a local lake (committed by rename) and on an S3 lake (committed by manifest)."""
    return Lake.from_url(lake.as_uri()) if request.param == "local" else request.getfixturevalue("s3_lake")


def write_table(lake: Lake, directory: str, values: list[int]) -> None:
    pq.write_table(pa.table({"value": values}), f"{directory}/part-0.parquet", filesystem=lake.filesystem)


def read_values(lake: Lake, day: date) -> list[int]:
    table = lake.read_partition("predictions", day)
    return table["value"].to_pylist() if table else []


def test_a_staged_partition_is_committed_with_its_files_listed(any_lake):
    day = date(2026, 11, 20)
    with any_lake.staged_partition("predictions", day) as staged:
        write_table(any_lake, staged.directory, [1, 2])
        staged.manifest["rows"] = 2
        assert any_lake.read_manifest("predictions", day) is None and read_values(any_lake, day) == []
    manifest = any_lake.read_manifest("predictions", day)
    assert manifest["rows"] == 2 and [entry["rows"] for entry in manifest["files"]] == [2]
    assert read_values(any_lake, day) == [1, 2]

    with any_lake.staged_partition("predictions", day) as staged:
        write_table(any_lake, staged.directory, [3])
    assert read_values(any_lake, day) == [3]
    partition = any_lake.partition("predictions", day)
    listed = any_lake.filesystem.get_file_info(pafs.FileSelector(partition, recursive=True))
    assert sorted(info.path for info in listed if info.is_file) == sorted(
        [f"{partition}/_manifest.json", *any_lake.partition_files("predictions", day)])


def test_a_failed_staged_write_keeps_the_committed_partition(any_lake):
    day = date(2026, 11, 20)
    with any_lake.staged_partition("predictions", day) as staged:
        write_table(any_lake, staged.directory, [1])
    with pytest.raises(RuntimeError), any_lake.staged_partition("predictions", day) as staged:
        write_table(any_lake, staged.directory, [2])
        raise RuntimeError("killed mid-write")
    assert read_values(any_lake, day) == [1]
    dataset = any_lake.path("predictions")
    listed = any_lake.filesystem.get_file_info(pafs.FileSelector(dataset, recursive=True))
    assert len([info for info in listed if info.is_file and info.path.endswith(".parquet")]) == 1


def test_lake_urls_name_their_paths(s3_lake, lake):
    local = Lake.from_url(str(lake))
    assert local.url == lake.as_uri() and local.is_local
    assert local.uri(local.partition("raw/ratings", date(2026, 11, 20))) == (
        f"file://{partition_path(lake, 'raw/ratings', date(2026, 11, 20))}")
    assert not s3_lake.is_local
    assert s3_lake.uri(s3_lake.partition("raw/ratings", date(2026, 11, 20))) == (
        f"{s3_lake.url}/raw/ratings/dt=2026-11-20")


def test_a_write_that_fails_before_any_file_keeps_the_original_error(any_lake):
    with pytest.raises(RuntimeError, match="no file yet"), any_lake.staged_partition("predictions", date(2026, 1, 1)):
        raise RuntimeError("no file yet")
    assert any_lake.read_manifest("predictions", date(2026, 1, 1)) is None


def test_the_files_of_one_table_are_moved_in_and_listed_from_the_manifest(any_lake):
    day = date(2026, 11, 20)
    incoming = any_lake.path("incoming")
    for table, rows in (("train", [1, 2]), ("_vocab/users", [3])):
        any_lake.filesystem.create_dir(f"{incoming}/{table}")
        write_table(any_lake, f"{incoming}/{table}", rows)
    with any_lake.staged_partition("features", day) as staged:
        any_lake.move_files(incoming, staged.directory)

    train = any_lake.partition_files("features", day, "train")
    assert [path.rsplit("/", 2)[-2:] for path in train] == [["train", "part-0.parquet"]]
    assert pq.read_table(train[0], filesystem=any_lake.filesystem)["value"].to_pylist() == [1, 2]
    assert len(any_lake.partition_files("features", day, "_vocab/users")) == 1
    assert any_lake.partition_files("features", day, "eval") == []
    assert len(any_lake.partition_files("features", day)) == 2
    remaining = any_lake.filesystem.get_file_info(pafs.FileSelector(incoming, recursive=True, allow_not_found=True))
    assert not [info for info in remaining if info.is_file]
    scheme = "file" if any_lake.is_local else "s3a"
    assert any_lake.spark_uri(train[0]) == f"{scheme}://{train[0]}"


def test_a_partition_without_a_file_list_is_read_from_its_directory_only_when_committed_by_rename(lake):
    day = date(2026, 11, 20)
    final = partition_path(lake, "raw/ratings", day)
    final.mkdir(parents=True)
    pq.write_table(pa.table({"value": [1]}), final / "part-0.parquet")
    by_rename, by_manifest = Lake.from_url(str(lake)), Lake.from_url(str(lake), manifest_commits=True)
    assert by_rename.has_partition("raw/ratings", day)
    assert by_rename.partition_files("raw/ratings", day) == [str(final / "part-0.parquet")]
    assert not by_manifest.has_partition("raw/ratings", day)
    assert by_manifest.partition_files("raw/ratings", day) == []
