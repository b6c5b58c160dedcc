"""The lake's root and layout, on local disk and on object stores: where a dataset's day lives, how to name a
writer's private folder. Commits are Delta's (`lakeloop.delta`)."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pyarrow import fs as pafs

from tfspark.storage import RemoteDirectory


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


LEGACY_MANIFEST = "_manifest.json"  # how a partition was committed before the lake's datasets became Delta tables
ATTEMPT_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
# An attempt not committed after this long is a killed writer's (a daily run does not stage one partition for a day).
ABANDONED_ATTEMPT_AGE = timedelta(hours=24)


@dataclass(frozen=True)
class Lake:
    """The lake root — a local directory or an object-store prefix — and how to reach its files.

    Every dataset of the lake is a Delta table partitioned by day (`lakeloop.delta`): a day's files are written in
    a writer's own folder inside the table and become visible by one commit to the table's log.
    """

    url: str
    filesystem: pafs.FileSystem
    root: str

    @classmethod
    def from_url(cls, url: str) -> Lake:
        """The lake at `url`: a path, `file://`, or any URL pyarrow knows (`s3://bucket/prefix`, `gs://`, ...).

        S3 credentials, region and endpoint come from the standard AWS variables (`AWS_ACCESS_KEY_ID`,
        `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL_S3` for MinIO or another S3 server).
        """
        parsed = urlparse(url)
        if parsed.scheme in ("", "file"):
            local = Path(parsed.path if parsed.scheme else url).resolve()
            return cls(url=local.as_uri(), filesystem=pafs.LocalFileSystem(), root=str(local))
        filesystem, root = pafs.FileSystem.from_uri(url)
        return cls(url=url.rstrip("/"), filesystem=filesystem, root=root.rstrip("/"))

    def __str__(self) -> str:
        return self.url

    @property
    def is_local(self) -> bool:
        """Whether the lake is a local directory (a `file://` URL) rather than an object store."""
        return urlparse(self.url).scheme == "file"

    def path(self, *parts: str) -> str:
        """A path inside the lake, on its filesystem."""
        return "/".join([self.root, *parts])

    def partition(self, dataset: str, day: date) -> str:
        """The folder of one day's partition of `dataset` (its `dt=` folder inside the table)."""
        return self.path(dataset, f"dt={day.isoformat()}")

    def uri(self, path: str) -> str:
        """The URL of a path inside the lake (what logs, summaries, MLflow tags and other tools are given), not
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
        try:
            with self.filesystem.open_input_stream(path) as stream:
                return json.loads(stream.read())
        except FileNotFoundError:
            return None

    def write_json(self, path: str, document: dict[str, Any]) -> None:
        """Write a JSON document in one PUT (local: write aside, then rename over)."""
        directory, name = path.rsplit("/", 1)
        RemoteDirectory(self.uri(directory), self.filesystem, directory).write_bytes(name, json_bytes(document))

    def parquet_files(self, directory: str) -> list[str]:
        """The Parquet files under `directory` (paths relative to it, sorted), leaving out hidden files (`.name`)."""
        infos = self.filesystem.get_file_info(pafs.FileSelector(directory, recursive=True, allow_not_found=True))
        return sorted(info.path[len(directory) + 1:] for info in infos
                      if info.is_file and info.path.endswith(".parquet") and not info.base_name.startswith("."))

    def move_files(self, source: str, target: str) -> list[str]:
        """Move the Parquet files under `source` to the same relative paths under `target` (local disk: a rename
        each; object stores: a server-side copy each, so the data does not pass through this process); return
        their relative paths."""
        moved = self.parquet_files(source)
        for name in moved:
            destination = f"{target}/{name}"
            self.filesystem.create_dir(destination.rsplit("/", 1)[0], recursive=True)
            self.filesystem.move(f"{source}/{name}", destination)
        return moved


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


def as_lake(location: Lake | Path | str) -> Lake:
    """A `Lake` for a lake object, a local path or a lake URL."""
    return location if isinstance(location, Lake) else Lake.from_url(str(location))
