"""Lake layout and atomic partition writes, on local disk and on object stores.

Every dataset in the lake is partitioned by day as `<lake>/<dataset>/dt=YYYY-MM-DD/`. Readers see the
previous complete partition, or none, but never a half-written one: on local disk a partition is written
into a hidden sibling directory and swapped in by rename; on an object store (`Lake`) its files are written
under an attempt prefix and published by one PUT of the partition's `_manifest.json`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from lakeloop.config import aws_region
from tfspark.storage import RemoteDirectory

log = logging.getLogger(__name__)


class ConcurrentWriteError(RuntimeError):
    """Another run wrote, or is writing, the same partition at the same time, so this run's rows were not committed:
    one of two overlapping writers fails rather than have its rows silently lost or a commit claim missing files."""


def json_bytes(document: dict[str, Any]) -> bytes:
    """How the lake stores a JSON document (manifests, model artefacts): indented, keys sorted, other values as
    strings."""
    return (json.dumps(document, indent=2, sort_keys=True, default=str) + "\n").encode()


def partition_path(lake: Path, dataset: str, day: date) -> Path:
    """The directory of one day's partition of `dataset` (e.g. `raw/ratings`)."""
    return lake / dataset / f"dt={day.isoformat()}"


def window_days(day: date, days: int) -> list[date]:
    """The `days` days ending on `day`, oldest first (a training or scoring window)."""
    return [day - timedelta(days=offset) for offset in range(days - 1, -1, -1)]


def swap_in(staged: Path, final: Path) -> None:
    """Replace `final` with the fully written directory `staged`, removing the previous version."""
    final.parent.mkdir(parents=True, exist_ok=True)
    retired = final.parent / f".retired-{final.name}-{uuid.uuid4().hex[:8]}"
    if final.exists():
        final.rename(retired)
    staged.rename(final)
    shutil.rmtree(retired, ignore_errors=True)


def staging_path(final: Path) -> Path:
    """A fresh hidden directory beside `final`, ignored by readers of the dataset."""
    return final.parent / f".staging-{final.name}-{uuid.uuid4().hex[:8]}"


@contextmanager
def atomic_partition(final: Path) -> Iterator[Path]:
    """Yield a staging directory; on success swap it in as `final`, on error discard it."""
    staged = staging_path(final)
    staged.mkdir(parents=True)
    try:
        yield staged
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    swap_in(staged, final)


@contextmanager
def _partition_write_lock(final: Path, what: str) -> Iterator[None]:
    """Hold the writer lock of one local partition for the block, or raise `ConcurrentWriteError` at once if another
    writer holds it (`what` names the partition in that message).

    The lock is `flock` on the hidden file `.lock-<partition>` beside the partition; the kernel releases it when
    its holder dies, so whoever holds it knows every staging directory of the partition is a dead writer's. The
    holder removes the file when done; a writer that locked a file already removed retries on the new one.
    """
    lock_path = final.parent / f".lock-{final.name}"
    final.parent.mkdir(parents=True, exist_ok=True)
    while True:
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise ConcurrentWriteError(
                f"another run is writing {what} ({lock_path} is locked by a live process); this run stopped before "
                "writing anything, because two writers of one partition lose rows. Wait for the other run to "
                "finish, or stop it, then rerun this one.") from None
        if _is_the_file_at(descriptor, lock_path):
            break
        os.close(descriptor)
    try:
        yield
    finally:
        lock_path.unlink(missing_ok=True)
        os.close(descriptor)


def _is_the_file_at(descriptor: int, path: Path) -> bool:
    """Whether the open file is still the one at `path` (not removed or replaced since it was opened)."""
    try:
        at_path = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(descriptor)
    return (opened.st_dev, opened.st_ino) == (at_path.st_dev, at_path.st_ino)


def _remove_leftovers_of(final: Path) -> None:
    """Remove the staging/retired directories that killed writers of this one partition left (call it only while
    holding `_partition_write_lock`: then no live writer has one)."""
    for leftover in [*final.parent.glob(f".staging-{final.name}-*"), *final.parent.glob(f".retired-{final.name}-*")]:
        log.warning("removing %s left by an interrupted run", leftover)
        shutil.rmtree(leftover, ignore_errors=True)


MANIFEST_NAME = "_manifest.json"
ATTEMPT_PREFIX = "_attempt-"
ATTEMPT_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
# An attempt not committed after this long is a killed writer's (a daily run does not stage one partition for a day).
ABANDONED_ATTEMPT_AGE = timedelta(hours=24)


@dataclass(frozen=True)
class Lake:
    """The lake root — a local directory or an object-store prefix — with the partition commit that holds on it.

    Local file systems rename directories atomically, so a partition is staged in a hidden sibling directory
    and swapped in (`atomic_partition`). Object stores cannot rename a directory, but a single PUT is atomic
    and strongly consistent: there a partition's files are written under `dt=D/_attempt-<id>/` and the
    partition is committed by one PUT of `dt=D/_manifest.json` naming them. Readers take the manifest's file
    list (`partition_files`), so files of a killed or superseded attempt are never read; superseded attempts
    are deleted after the commit (a reader still listing them at that moment fails and must retry).
    A writer of a partition that another run is writing fails with `ConcurrentWriteError` (a lock on local disk;
    on S3 a PUT conditional on the manifest read at the start; on other object stores a check of the manifest
    before and after the commit: docs/deployment.md).
    `manifest_commits` says which protocol the lake uses: always on object stores; on a local directory only
    when asked for (tests run the object-store protocol through real Spark that way, without S3).
    """

    url: str
    filesystem: pafs.FileSystem
    root: str
    manifest_commits: bool

    @classmethod
    def from_url(cls, url: str, manifest_commits: bool = False) -> Lake:
        """The lake at `url`: a path, `file://`, or any URL pyarrow knows (`s3://bucket/prefix`, `gs://`, ...).

        S3 credentials, region and endpoint come from the standard AWS variables (`AWS_ACCESS_KEY_ID`,
        `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL_S3` for MinIO or another S3 server).
        A local lake commits by rename unless `manifest_commits`; other lakes always commit by manifest.
        """
        parsed = urlparse(url)
        if parsed.scheme in ("", "file"):
            local = Path(parsed.path if parsed.scheme else url).resolve()
            return cls(url=local.as_uri(), filesystem=pafs.LocalFileSystem(), root=str(local),
                       manifest_commits=manifest_commits)
        filesystem, root = pafs.FileSystem.from_uri(url)
        return cls(url=url.rstrip("/"), filesystem=filesystem, root=root.rstrip("/"), manifest_commits=True)

    def __str__(self) -> str:
        return self.url

    @property
    def is_local(self) -> bool:
        """Whether the lake is a local directory (a `file://` URL) rather than an object store."""
        return urlparse(self.url).scheme == "file"

    @property
    def commits_conditionally(self) -> bool:
        """Whether the manifest commit is a compare-and-swap (S3's conditional PUT), which leaves two writers no
        window; other object stores commit by an unconditional PUT checked before and after."""
        return self.manifest_commits and urlparse(self.url).scheme == "s3"

    @cached_property
    def s3_client(self) -> Any:
        """The boto3 client of an `s3://` lake, for the one thing pyarrow's filesystem cannot do: a conditional PUT.
        boto3 reads the same AWS variables as pyarrow (keys, `AWS_ENDPOINT_URL_S3`), so both reach the same store
        with the same identity; the region is given as `config.s3a_settings` takes it (boto3 itself ignores
        `AWS_REGION`, which docker-compose sets)."""
        import boto3  # here, not at the top: it costs ~0.3 s in every process that imports the lake

        return boto3.session.Session(region_name=aws_region()).client("s3")

    def path(self, *parts: str) -> str:
        """A path inside the lake, on its filesystem."""
        return "/".join([self.root, *parts])

    def partition(self, dataset: str, day: date) -> str:
        """The path of one day's partition of `dataset`."""
        return self.path(dataset, f"dt={day.isoformat()}")

    def uri(self, path: str) -> str:
        """The URL of a path inside the lake (what logs, manifests, MLflow tags and other tools are given), not
        percent-encoded, so it can be pasted into Spark or pyarrow as it is (`.../dt=2026-11-20`)."""
        scheme = "file" if self.is_local else urlparse(self.url).scheme
        return f"{scheme}://{path}"

    def spark_uri(self, path: str) -> str:
        """The URI Spark (Hadoop) reads and writes a path of the lake by: `file:///...`, `s3a://bucket/...` for S3
        (Hadoop's S3 connector), the lake's own scheme otherwise (`gs://`, `hdfs://`...). Not percent-encoded:
        Hadoop takes the characters as they are (`dt=...` would otherwise become a directory `dt%3D...`)."""
        uri = self.uri(path)
        return f"s3a{uri[2:]}" if uri.startswith("s3://") else uri

    def read_json(self, path: str) -> dict[str, Any] | None:
        """A JSON document of the lake, or None if it does not exist."""
        document = self._read_bytes(path)
        return None if document is None else json.loads(document)

    def write_json(self, path: str, document: dict[str, Any]) -> None:
        """Write a JSON document in one PUT (local: write aside, then rename over)."""
        directory, name = path.rsplit("/", 1)
        RemoteDirectory(self.uri(directory), self.filesystem, directory).write_bytes(name, json_bytes(document))

    def read_manifest(self, dataset: str, day: date) -> dict[str, Any] | None:
        """The `_manifest.json` of a committed partition, or None if the day has no committed partition."""
        return self.read_json(f"{self.partition(dataset, day)}/{MANIFEST_NAME}")

    def has_partition(self, dataset: str, day: date) -> bool:
        """Whether the day's partition of `dataset` is committed: its manifest is published, or (on a lake that
        commits by rename) its directory exists."""
        if self.read_manifest(dataset, day) is not None:
            return True
        return not self.manifest_commits and Path(self.partition(dataset, day)).is_dir()

    def partition_files(self, dataset: str, day: date, table: str = "") -> list[str]:
        """The data files of the day's committed partition (paths on the lake's filesystem); [] if none.

        `table` keeps the files of one subdirectory of the partition (e.g. `train`, `_vocab/users` of a feature
        partition). The manifest's list is authoritative; a partition committed by rename without a file list
        (written before manifests listed files, or by hand) falls back to the Parquet files of its directory.
        """
        partition = self.partition(dataset, day)
        manifest = self.read_manifest(dataset, day)
        if manifest is not None and "files" in manifest:
            names = [entry["name"] for entry in manifest["files"]]
        elif not self.manifest_commits and Path(partition).is_dir():
            names = [entry["name"] for entry in self._parquet_files(partition)]
        else:
            return []
        prefix = f"{table.strip('/')}/" if table else ""
        return [f"{partition}/{name}" for name in names if _inside_attempt(name).startswith(prefix)]

    def read_partition(self, dataset: str, day: date, table: str = "",
                       columns: list[str] | None = None) -> pa.Table | None:
        """The rows of the day's committed partition, or of its `table` subdirectory (exactly the files its manifest
        names; only `columns` if given), or None if none."""
        files = self.partition_files(dataset, day, table)
        if not files:
            return None
        return pq.ParquetDataset(files, filesystem=self.filesystem, partitioning=None).read(columns=columns)

    def move_files(self, source: str, target: str) -> None:
        """Move the Parquet files under `source` to the same relative paths under `target` (local disk: a rename
        each; object stores: a server-side copy each, so the data does not pass through this process)."""
        for entry in self._parquet_files(source):
            destination = f"{target}/{entry['name']}"
            self.filesystem.create_dir(destination.rsplit("/", 1)[0], recursive=True)
            self.filesystem.move(entry["path"], destination)

    @contextmanager
    def staged_partition(self, dataset: str, day: date) -> Iterator[StagedPartition]:
        """Yield a staging area for the day's partition; on success commit it, on error discard it.

        Write the data files (Parquet, any depth) into `staged.directory` through `self.filesystem` and fill
        `staged.manifest`; the commit adds the list of files and their rows under `"files"`. Raises
        `ConcurrentWriteError` when another run writes the same partition at the same time: on a lake committed by
        rename at the start, while the other one stages; on one committed by manifest at the commit, if the other
        committed first (this run's files are then deleted). On object stores other than S3 one window is left: a
        commit whose check precedes another's PUT and read-back replaces it, and both report success
        (docs/deployment.md); the manifest then holds the later one's rows, whole.
        """
        final = self.partition(dataset, day)
        if not self.manifest_commits:
            with _partition_write_lock(Path(final), f"{dataset} for {day} in {self}"):
                _remove_leftovers_of(Path(final))
                with atomic_partition(Path(final)) as directory:
                    staged = StagedPartition(directory=str(directory), manifest={})
                    yield staged
                    staged.manifest["files"] = self._files_with_rows(staged.directory)
                    self.write_json(f"{staged.directory}/{MANIFEST_NAME}", staged.manifest)
            return
        base, base_etag = self._read_manifest_version(f"{final}/{MANIFEST_NAME}")
        attempt = timed_name(ATTEMPT_PREFIX)
        staged = StagedPartition(directory=f"{final}/{attempt}", manifest={})
        if self.is_local:  # object stores have no directories; a local one must exist before files go in
            self.filesystem.create_dir(staged.directory, recursive=True)
        try:
            yield staged
            staged.manifest["files"] = [{**entry, "name": f"{attempt}/{entry['name']}"}
                                        for entry in self._files_with_rows(staged.directory)]
        except BaseException:
            self._discard_attempt(staged.directory)
            raise
        self._commit_manifest(dataset, day, base, base_etag, staged.directory, staged.manifest)
        self._delete_superseded(final, base, keep=attempt)

    def _commit_manifest(self, dataset: str, day: date, base: bytes | None, base_etag: str | None, attempt_dir: str,
                         manifest: dict[str, Any]) -> None:
        """Publish `manifest` as the partition's commit if no other writer committed since the manifest `base` (with
        `base_etag` on S3) was read: check the manifest, then PUT it, on S3 conditionally (no other commit can land
        in between), elsewhere reading it back after. If another did, delete the attempt and raise
        `ConcurrentWriteError`. If a request fails otherwise, the commit may have landed: the error propagates and
        the attempt is kept.
        """
        final, attempt = attempt_dir.rsplit("/", 1)
        path = f"{final}/{MANIFEST_NAME}"
        committed_meanwhile = "it was committed by another run while this run wrote it"
        if self._read_bytes(path) != base:
            self._discard_attempt(attempt_dir)
            raise self._concurrent_write(dataset, day, committed_meanwhile)
        if self.commits_conditionally:
            if not self._put_manifest_if_unchanged(path, json_bytes(manifest), base_etag):
                self._discard_attempt(attempt_dir)
                raise self._concurrent_write(dataset, day, committed_meanwhile)
            return
        self._put_manifest(final, attempt, manifest)
        if self._read_bytes(path) != json_bytes(manifest):
            self._discard_attempt(attempt_dir)
            raise self._concurrent_write(dataset, day, "another run's commit replaced this run's as it was made")

    def _concurrent_write(self, dataset: str, day: date, what_happened: str) -> ConcurrentWriteError:
        partition = self.uri(self.partition(dataset, day))
        return ConcurrentWriteError(
            f"{partition}: {what_happened}. This run's rows were not committed (its files are deleted); the "
            f"partition holds the other run's commit, whole. Two runs wrote {dataset} for {day} at the same time: "
            "let one run write a day at a time (no manual run or rerun while another run of the day is active), "
            "then rerun this one if its rows are the ones wanted.")

    def _put_manifest(self, partition: str, attempt: str, manifest: dict[str, Any]) -> None:
        """One PUT of the partition's manifest (local disk: written in the attempt's directory, then renamed over,
        so two writers never share a half-written file)."""
        target = f"{partition}/{MANIFEST_NAME}"
        if not self.is_local:
            self.write_json(target, manifest)
            return
        written = f"{partition}/{attempt}/.{MANIFEST_NAME}.partial"
        with self.filesystem.open_output_stream(written) as stream:
            stream.write(json_bytes(manifest))
        self.filesystem.move(written, target)

    def _read_manifest_version(self, path: str) -> tuple[bytes | None, str | None]:
        """The manifest at `path` and, on a lake that commits conditionally, its S3 ETag, read in one request so that
        the two belong to the same version; (None, None) if there is none."""
        if not self.commits_conditionally:
            return self._read_bytes(path), None
        bucket, key = path.split("/", 1)
        try:
            response = self.s3_client.get_object(Bucket=bucket, Key=key)
        except self.s3_client.exceptions.NoSuchKey:
            return None, None
        return response["Body"].read(), response["ETag"]

    def _put_manifest_if_unchanged(self, path: str, document: bytes, base_etag: str | None) -> bool:
        """One PUT of the manifest that S3 applies only if the manifest is still the version with `base_etag`
        (`If-Match`), or still absent if there was none (`If-None-Match: *`); whether this run's manifest is the
        commit. A 412 answers a retry too: botocore resends a PUT whose answer was lost though it landed, and the
        resent one then fails on the run's own manifest, which is this run's commit all the same. Other answers (the
store cannot answer) propagate: the commit may have landed."""
        bucket, key = path.split("/", 1)
        condition = {"IfMatch": base_etag} if base_etag else {"IfNoneMatch": "*"}
        try:
            self.s3_client.put_object(Bucket=bucket, Key=key, Body=document, **condition)
        except self.s3_client.exceptions.ClientError as error:
            # 412: the condition failed; 409: another conditional write of the key was in flight (AWS); 404: the
            # manifest was deleted since it was read (If-Match). Each means another run changed the partition.
            if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") not in (404, 409, 412):
                raise
            return self._read_bytes(path) == document
        return True

    def _read_bytes(self, path: str) -> bytes | None:
        try:
            with self.filesystem.open_input_stream(path) as stream:
                return stream.read()
        except FileNotFoundError:
            return None

    def _discard_attempt(self, directory: str) -> None:
        try:
            self.filesystem.delete_dir(directory)
        except OSError as error:  # nothing uploaded yet, or the store is unreachable: the attempt stays unread
            log.warning("could not delete the attempt %s: %s", directory, error)

    def _parquet_files(self, directory: str) -> list[dict[str, Any]]:
        """The Parquet files under `directory` (names relative to it), leaving out hidden files (`.name`)."""
        infos = self.filesystem.get_file_info(pafs.FileSelector(directory, recursive=True))
        return [{"name": info.path[len(directory) + 1:], "path": info.path} for info in infos
                if info.is_file and info.path.endswith(".parquet") and not info.base_name.startswith(".")]

    def _files_with_rows(self, directory: str) -> list[dict[str, Any]]:
        return [{"name": entry["name"],
                 "rows": pq.ParquetFile(entry["path"], filesystem=self.filesystem).metadata.num_rows}
                for entry in sorted(self._parquet_files(directory), key=lambda entry: entry["name"])]

    def _delete_superseded(self, partition: str, base: bytes | None, keep: str) -> None:
        """After a commit, delete the attempts of the version it replaced (`base`) and those abandoned by killed
        writers — never one that may still be a live writer's."""
        replaced = {entry["name"].split("/", 1)[0] for entry in json.loads(base).get("files", [])} if base else set()
        now = datetime.now(UTC)
        for info in self.filesystem.get_file_info(pafs.FileSelector(partition)):
            name = info.base_name
            if name != keep and name.startswith(ATTEMPT_PREFIX) and (
                    name in replaced or is_abandoned(name, ATTEMPT_PREFIX, now)):
                try:
                    self.filesystem.delete_dir(info.path)
                except FileNotFoundError:  # another writer's cleanup deleted it first
                    pass


def timed_name(prefix: str) -> str:
    """A unique name for one writer's private directory (an attempt, a job's staging), carrying its UTC start time
    so that `is_abandoned` can tell a killed writer's leftover from a live writer's directory."""
    return f"{prefix}{datetime.now(UTC).strftime(ATTEMPT_TIME_FORMAT)}-{uuid.uuid4().hex[:16]}"


def is_abandoned(name: str, prefix: str, now: datetime) -> bool:
    """Whether a writer's directory named by `timed_name(prefix)` is a killed writer's: it started more than
    `ABANDONED_ATTEMPT_AGE` ago, or its name has no start time (written by a version that did not protect
    concurrent writers, so no writer of this version can be using it)."""
    timed = re.fullmatch(rf"{re.escape(prefix)}(\d{{8}}T\d{{6}}Z)-[0-9a-f]+", name)
    if timed is None:
        return True
    started = datetime.strptime(timed.group(1), ATTEMPT_TIME_FORMAT).replace(tzinfo=UTC)
    return now - started > ABANDONED_ATTEMPT_AGE


def _inside_attempt(name: str) -> str:
    """A manifest file name relative to its attempt directory (names of rename-committed partitions have none)."""
    return name.split("/", 1)[1] if name.startswith(ATTEMPT_PREFIX) else name


def as_lake(location: Lake | Path | str) -> Lake:
    """A `Lake` for a lake object, a local path or a lake URL."""
    return location if isinstance(location, Lake) else Lake.from_url(str(location))


@dataclass
class StagedPartition:
    """Where a partition being written goes (`directory`) and the manifest it will be committed with."""

    directory: str
    manifest: dict[str, Any]
