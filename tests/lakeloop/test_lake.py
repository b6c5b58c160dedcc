"""Atomic partition writes: readers see the old complete partition or the new one, never a half."""

from __future__ import annotations

import functools
import subprocess
import sys
import threading
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyarrow import fs as pafs

from lakeloop.lake import (
    ConcurrentWriteError,
    Lake,
    atomic_partition,
    partition_path,
    window_days,
)


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


DAY = date(2026, 11, 20)


class Writer(threading.Thread):
    """One writer of the day's `predictions` partition in its own thread (as a second Airflow run would be): it
    stages `values`, says so (`staged`), and commits once `commit` is set; the error it ended with is kept."""

    def __init__(self, lake: Lake, values: list[int]) -> None:
        super().__init__(daemon=True)
        self.lake, self.values = lake, values
        self.staged, self.commit = threading.Event(), threading.Event()
        self.directory: str | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.lake.staged_partition("predictions", DAY) as staged:
                write_table(self.lake, staged.directory, self.values)
                staged.manifest["rows"] = len(self.values)
                self.directory = staged.directory
                self.staged.set()
                assert self.commit.wait(60), "the test never let this writer commit"
        except BaseException as error:  # noqa: BLE001 - the test inspects whatever the writer ended with
            self.error = error
        finally:
            self.staged.set()

    def finish(self) -> BaseException | None:
        """Let the writer commit, wait for it, and return its error (None if it committed)."""
        self.commit.set()
        self.join(60)
        assert not self.is_alive(), "the writer did not finish"
        return self.error


def commit_values(lake: Lake, values: list[int]) -> str:
    """Commit `values` as the day's partition (one writer alone); return the attempt or staging directory."""
    with lake.staged_partition("predictions", DAY) as staged:
        write_table(lake, staged.directory, values)
        staged.manifest["rows"] = len(values)
    return staged.directory


def start_staging(lake: Lake, values: list[int]) -> Writer:
    writer = Writer(lake, values)
    writer.start()
    assert writer.staged.wait(60) and writer.error is None, writer.error
    return writer


def assert_the_manifest_holds_its_rows(lake: Lake, day: date = DAY) -> None:
    """The committed manifest's invariant: every file it names exists, holds the rows it says, and they add up to
    the rows the commit claims."""
    manifest = lake.read_manifest("predictions", day)
    partition = lake.partition("predictions", day)
    rows = [pq.ParquetFile(f"{partition}/{entry['name']}", filesystem=lake.filesystem).metadata.num_rows
            for entry in manifest["files"]]
    assert rows == [entry["rows"] for entry in manifest["files"]]
    assert sum(rows) == manifest["rows"]


def names_in(lake: Lake, directory: str) -> list[str]:
    return sorted(info.base_name for info in lake.filesystem.get_file_info(pafs.FileSelector(directory)))


def test_a_second_writer_of_a_locally_staged_partition_fails_and_the_first_commits(lake):
    local = Lake.from_url(str(lake))
    first = start_staging(local, [1, 2, 3])
    second = Writer(local, [7, 8])
    second.start()
    error = second.finish()

    assert isinstance(error, ConcurrentWriteError), error
    assert "predictions" in str(error) and "2026-11-20" in str(error) and "other run" in str(error)
    assert [info.base_name for info in local.filesystem.get_file_info(
        pafs.FileSelector(first.directory))] == ["part-0.parquet"]
    assert first.finish() is None
    assert read_values(local, DAY) == [1, 2, 3]
    assert_the_manifest_holds_its_rows(local)
    assert names_in(local, local.path("predictions")) == ["dt=2026-11-20"]


KILLED_WRITER = """
import sys
from datetime import date
import pyarrow as pa, pyarrow.parquet as pq
from lakeloop.lake import Lake
lake = Lake.from_url(sys.argv[1])
with lake.staged_partition("predictions", date(2026, 11, 20)) as staged:
    pq.write_table(pa.table({"value": [99]}), f"{staged.directory}/part-0.parquet")
    print(staged.directory, flush=True)
    sys.stdin.read()
"""


def test_a_killed_local_writer_releases_the_partition_and_its_staging_is_removed(lake):
    local = Lake.from_url(str(lake))
    commit_values(local, [1])
    killed = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(lake)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    staging = Path(killed.stdout.readline().strip())
    assert (staging / "part-0.parquet").is_file()
    killed.kill()
    killed.wait()

    commit_values(local, [2])
    assert read_values(local, DAY) == [2] and not staging.exists()
    assert names_in(local, local.path("predictions")) == ["dt=2026-11-20"]


@pytest.fixture(params=["s3", "local-manifest"])
def manifest_lake(request, lake) -> Lake:
    """A lake committed by manifest: on the S3 server, and on local disk with `manifest_commits=True`."""
    return request.getfixturevalue("s3_lake") if request.param == "s3" else Lake.from_url(
        str(lake), manifest_commits=True)


@pytest.mark.parametrize("later", ["first", "second"])
def test_of_two_overlapping_manifest_writers_the_later_committer_fails(manifest_lake, later):
    commit_values(manifest_lake, [0])
    first = start_staging(manifest_lake, [1, 2, 3])
    second = start_staging(manifest_lake, [7, 8])
    winner, loser = (second, first) if later == "first" else (first, second)

    assert winner.finish() is None
    error = loser.finish()

    assert isinstance(error, ConcurrentWriteError), error
    assert "committed by another run" in str(error) and "not committed" in str(error)
    assert read_values(manifest_lake, DAY) == winner.values
    assert_the_manifest_holds_its_rows(manifest_lake)
    partition = manifest_lake.partition("predictions", DAY)
    assert names_in(manifest_lake, partition) == sorted([winner.directory.rsplit("/", 1)[-1], "_manifest.json"])


class PausingHandler(pafs.FileSystemHandler):
    """The lake's real filesystem, passed through, with one pause: the writer using it stops before the first
    request `pause_at(operation, path, earlier_requests)` accepts (`reached` is set) until the test sets `resume`.
    It puts two writers' store requests in an exact order; every request still goes to the real store."""

    def __init__(self, inner: pafs.FileSystem, pause_at) -> None:
        self.inner, self.pause_at = inner, pause_at
        self.requests: list[tuple[str, str]] = []
        self.reached, self.resume = threading.Event(), threading.Event()

    def _request(self, operation: str, path: str) -> None:
        if not self.reached.is_set() and self.pause_at(operation, path, self.requests):
            self.reached.set()
            assert self.resume.wait(60), "the test never resumed the paused writer"
        self.requests.append((operation, path))

    def watch(self, s3_client) -> None:
        """Hold and record the manifest requests the lake makes through boto3 (S3's conditional commit) too, by
        botocore's event hooks: a GetObject as a read, a PutObject as a write of `bucket/key`."""
        def hold_and_record(params, operation, **_) -> None:
            self._request(operation, f"{params['Bucket']}/{params['Key']}")

        for operation, s3_operation in (("read", "GetObject"), ("write", "PutObject")):
            s3_client.meta.events.register(f"before-parameter-build.s3.{s3_operation}",
                                           functools.partial(hold_and_record, operation=operation))

    def get_type_name(self):
        return f"pausing-{self.inner.type_name}"

    def normalize_path(self, path):
        return self.inner.normalize_path(path)

    def get_file_info(self, paths):
        return self.inner.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.inner.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.inner.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.inner.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.inner.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        self.inner.delete_dir_contents("/", accept_root_dir=True)

    def delete_file(self, path):
        self.inner.delete_file(path)

    def move(self, src, dest):
        self.inner.move(src, dest)

    def copy_file(self, src, dest):
        self.inner.copy_file(src, dest)

    def open_input_stream(self, path):
        self._request("read", path)
        return self.inner.open_input_stream(path)

    def open_input_file(self, path):
        return self.inner.open_input_file(path)

    def open_output_stream(self, path, metadata):
        self._request("write", path)
        return self.inner.open_output_stream(path, metadata=metadata)

    def open_append_stream(self, path, metadata):
        return self.inner.open_append_stream(path, metadata=metadata)


def before_its_manifest_put(operation: str, path: str, earlier: list) -> bool:
    """Before the request that publishes the writer's manifest: its PUT on an object store; on local disk the write
    of the file it then renames over the manifest."""
    return operation == "write" and path.endswith(("/_manifest.json", "/._manifest.json.partial"))


def before_reading_back_its_manifest(operation: str, path: str, earlier: list) -> bool:
    return operation == "read" and path.endswith("/_manifest.json") and any(
        before_its_manifest_put(*request, []) for request in earlier)


def pausing_writer(lake: Lake, values: list[int], pause_at) -> tuple[Writer, PausingHandler]:
    """A writer staging `values` in the same lake through a filesystem that pauses it where `pause_at` says."""
    handler = PausingHandler(lake.filesystem, pause_at)
    paused_lake = Lake(url=lake.url, filesystem=pafs.PyFileSystem(handler), root=lake.root, manifest_commits=True)
    if paused_lake.commits_conditionally:
        handler.watch(paused_lake.s3_client)
    return start_staging(paused_lake, values), handler


def commit_until_paused(writer: Writer, pause: PausingHandler) -> None:
    """Let the writer commit and wait until it reaches its pause (or ends without one, as a wrong protocol may)."""
    writer.commit.set()
    while not pause.reached.wait(0.05) and writer.is_alive():
        pass


def commit_while_another_waits_to_put(lake: Lake) -> tuple[Writer, Writer]:
    """Two writers of the day: `later` checks the partition and is held before its manifest PUT while `earlier`
    commits [1, 2, 3], which must succeed; then `later` PUTs [7, 8]. Both have finished; `later.error` says how."""
    later, later_pause = pausing_writer(lake, [7, 8], before_its_manifest_put)
    earlier = start_staging(lake, [1, 2, 3])
    commit_until_paused(later, later_pause)
    assert earlier.finish() is None
    later_pause.resume.set()
    later.finish()
    return earlier, later


def test_a_commit_replaced_before_it_is_read_back_fails_and_the_later_one_lands_whole(lake):
    """On a lake whose manifest PUT is unconditional (local disk here; gs:// and object stores other than S3 too)."""
    manifest_lake = Lake.from_url(str(lake), manifest_commits=True)
    commit_values(manifest_lake, [0])
    first, first_pause = pausing_writer(manifest_lake, [1, 2, 3], before_reading_back_its_manifest)
    second, second_pause = pausing_writer(manifest_lake, [7, 8], before_its_manifest_put)
    commit_until_paused(second, second_pause)  # found the partition as it started: about to PUT
    commit_until_paused(first, first_pause)  # found it so too, and PUT its manifest
    second_pause.resume.set()
    assert second.finish() is None
    first_pause.resume.set()

    error = first.finish()
    assert isinstance(error, ConcurrentWriteError), error
    assert "replaced" in str(error)
    assert read_values(manifest_lake, DAY) == [7, 8]
    assert_the_manifest_holds_its_rows(manifest_lake)
    assert names_in(manifest_lake, manifest_lake.partition("predictions", DAY)) == sorted(
        [second.directory.rsplit("/", 1)[-1], "_manifest.json"])


def test_in_the_window_left_without_a_conditional_put_both_report_success_and_the_manifest_holds_its_rows(lake):
    """The window docs/deployment.md describes for lakes without a conditional PUT (local disk committed by manifest
    here, gs:// and other object stores too): a commit checked before another's PUT and read-back replaces it.
    Nothing is deleted that the manifest names."""
    manifest_lake = Lake.from_url(str(lake), manifest_commits=True)
    commit_values(manifest_lake, [0])
    earlier, later = commit_while_another_waits_to_put(manifest_lake)

    assert later.error is None
    assert read_values(manifest_lake, DAY) == [7, 8]
    assert_the_manifest_holds_its_rows(manifest_lake)
    attempts = [writer.directory.rsplit("/", 1)[-1] for writer in (earlier, later)]
    assert names_in(manifest_lake, manifest_lake.partition("predictions", DAY)) == sorted([*attempts, "_manifest.json"])


@pytest.mark.parametrize("committed_before", [True, False], ids=["replacing-a-commit", "first-commit"])
def test_on_s3_a_commit_checked_before_another_lands_is_refused_by_its_conditional_put(s3_lake, committed_before):
    """The window above is closed on S3: the manifest PUT is conditional on the version read as the writer started
    (`If-Match: <etag>`, or `If-None-Match: *` for a first commit), so the later PUT fails and the earlier commit's
    rows stay.

    moto checks the condition and then writes without holding a lock in between, so two PUTs arriving at the same
    instant on its threaded server could both pass (AWS and MinIO check atomically). The test does not rely on
    that: the events hold the later writer before its PUT until the earlier one has committed."""
    if committed_before:
        commit_values(s3_lake, [0])
    earlier, later = commit_while_another_waits_to_put(s3_lake)

    assert isinstance(later.error, ConcurrentWriteError), later.error
    assert "committed by another run" in str(later.error) and "not committed" in str(later.error)
    assert read_values(s3_lake, DAY) == [1, 2, 3]
    assert_the_manifest_holds_its_rows(s3_lake)
    assert names_in(s3_lake, s3_lake.partition("predictions", DAY)) == sorted(
        [earlier.directory.rsplit("/", 1)[-1], "_manifest.json"])


def test_an_s3_manifest_put_resent_after_it_landed_is_this_runs_commit(s3_lake):
    """botocore resends a PUT whose answer was lost (a timeout, a reset connection) though it may have landed; the
    resent conditional PUT then fails with 412 on the run's own manifest. That is this run's commit: its files stay.
    The hook makes botocore resend the first manifest PUT after the server answered it."""
    commit_values(s3_lake, [0])
    resent = []

    def resend_the_first_put(response, **_) -> int | None:
        if resent or response is None or response[0].status_code != 200:
            return None
        resent.append(True)
        return 0  # seconds to wait before sending it again

    s3_lake.s3_client.meta.events.register("needs-retry.s3.PutObject", resend_the_first_put)
    commit_values(s3_lake, [1, 2])

    assert resent
    assert read_values(s3_lake, DAY) == [1, 2]
    assert_the_manifest_holds_its_rows(s3_lake)


def attempt_name(started: datetime) -> str:
    return f"_attempt-{started.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:16]}"


def test_attempts_of_killed_writers_are_kept_a_day_then_removed(lake):
    manifest_lake = Lake.from_url(str(lake), manifest_commits=True)
    partition = manifest_lake.partition("predictions", DAY)
    now = datetime.now(UTC)
    recent, old, unnamed = attempt_name(now - timedelta(hours=1)), attempt_name(now - timedelta(hours=25)), "_attempt-x"
    for attempt in (recent, old, unnamed):
        manifest_lake.filesystem.create_dir(f"{partition}/{attempt}")
        write_table(manifest_lake, f"{partition}/{attempt}", [99])

    committed = commit_values(manifest_lake, [1])

    assert read_values(manifest_lake, DAY) == [1]
    assert names_in(manifest_lake, partition) == sorted([committed.rsplit("/", 1)[-1], recent,
                                                        "_manifest.json"])
