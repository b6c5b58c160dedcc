"""Delta Lake tables of the lake (`dt`-partitioned), written and read from Python through delta-rs (`deltalake`):
one commit per day's write, so any Delta reader sees whole days only (docs/deployment.md, "Delta tables")."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from lakeloop.config import aws_region, s3_endpoint
from lakeloop.lake import LEGACY_MANIFEST, ConcurrentWriteError, Lake

if TYPE_CHECKING:
    from deltalake import DeltaTable

PARTITION_COLUMN = "dt"
SUMMARY_KEY = "lakeloop.summary"
VACUUM_OPERATION = "VACUUM START"  # the commit delta-rs' VACUUM writes before deleting, with its retention
RETENTION_SETTING = "LAKELOOP_DELTA_RETENTION_HOURS"

log = logging.getLogger(__name__)


class TableVersionUnavailableError(LookupError):
    """A past version of a Delta table cannot be read: its log no longer holds it, or VACUUM deleted its files."""


@dataclass(frozen=True)
class PartitionCommit:
    """What a day's write committed: the table's URL and the table version its commit made (lineage: a reader
    reads the same rows again with `read_partition(..., version=...)` while VACUUM keeps its files)."""

    uri: str
    version: int


@dataclass(frozen=True)
class AttemptFolder:
    """Where one run writes a day's files inside a Delta table before committing them: `<table>/dt=D/<attempt>/`.
    Files a killed run leaves there are named by no commit, so no reader sees them; VACUUM deletes them."""

    lake: Lake
    dataset: str
    day: date
    attempt: str

    @property
    def relative(self) -> str:
        """The folder relative to the table's root, as the Delta log names its files."""
        return f"{PARTITION_COLUMN}={self.day.isoformat()}/{self.attempt}"

    @property
    def path(self) -> str:
        """The folder's path on the lake's filesystem."""
        return self.lake.path(self.dataset, self.relative)

    def create(self) -> str:
        """The folder's path, created on local disk (object stores have no folders)."""
        if self.lake.is_local:
            self.lake.filesystem.create_dir(self.path, recursive=True)
        return self.path

    def files(self) -> list[str]:
        """The Parquet files written in the folder (any depth), relative to the table's root."""
        return [f"{self.relative}/{name}" for name in self.lake.parquet_files(self.path)]

    def commit(self, summary: dict[str, Any]) -> PartitionCommit:
        """Commit the folder's files as the table's day with `summary`; a commit refused whole (another run's
        commit raced it, another schema) deletes them, a request that failed otherwise may have landed: kept."""
        try:
            return commit_partition_files(self.lake, self.dataset, self.day, self.files(), summary)
        except (ConcurrentWriteError, ValueError):
            self.discard()
            raise

    def discard(self) -> None:
        """Delete the folder of a run that will not commit it (best effort: what stays is never read)."""
        try:
            self.lake.filesystem.delete_dir(self.path)
        except OSError as error:
            log.warning("could not delete the uncommitted files in %s: %s", self.lake.uri(self.path), error)


def day_predicate(day: date) -> str:
    """The SQL predicate of one day's partition, as writes replace it and readers select it."""
    return f"{PARTITION_COLUMN} = '{day.isoformat()}'"


def table_uri(lake: Lake, dataset: str) -> str:
    """Where the Delta table of `dataset` lives: a local path, or the object store's URL (`s3://bucket/...`)."""
    return lake.path(dataset) if lake.is_local else lake.uri(lake.path(dataset))


def storage_options(lake: Lake, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """delta-rs' options to reach the lake's object store, from the same standard AWS variables pyarrow and Spark's
    s3a read (`AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`, `AWS_REGION`, the keys), so all reach one store as one
    identity. Commits on S3 are conditional writes (delta-rs 1.x), which S3 and MinIO honour: no lock table."""
    if lake.is_local:
        return {}
    env = os.environ if environ is None else environ
    options = {key: env[key] for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
               if env.get(key)}
    endpoint = s3_endpoint(env)
    if endpoint:
        options.update(AWS_ENDPOINT_URL=endpoint, AWS_ALLOW_HTTP=str(endpoint.startswith("http://")).lower())
    region = aws_region(env)
    if region:
        options["AWS_REGION"] = region
    return options


def replace_partition(lake: Lake, dataset: str, day: date, rows: pa.Table, summary: dict[str, Any]) -> PartitionCommit:
    """Make `rows` the day's partition of the Delta table `dataset` in one commit that carries `summary` (what the
    job did, for `partition_summary`); create the table on the first write. Return the table's URI and the version
    the commit made.

    The table's schema is enforced: rows of another schema fail the write and change nothing. Two writers of the
    same day: the second commit conflicts and fails with `ConcurrentWriteError`."""
    from deltalake import CommitProperties, write_deltalake

    uri = table_uri(lake, dataset)
    table = open_table(lake, dataset)
    day_rows = rows.append_column(PARTITION_COLUMN, pa.array([day.isoformat()] * rows.num_rows, pa.string()))
    carried = json.dumps(summary)
    with _refused_commits(lake, dataset, day, "write"):
        write_deltalake(uri if table is None else table, day_rows, mode="overwrite", predicate=day_predicate(day),
                        partition_by=[PARTITION_COLUMN], storage_options=storage_options(lake),
                        commit_properties=CommitProperties(custom_metadata={SUMMARY_KEY: carried}))
    # A table object written through holds the version its commit made; a table this write created is looked up.
    version = table.version() if table is not None else _version_carrying(lake, dataset, day, carried)
    return PartitionCommit(lake.uri(lake.path(dataset)), version)


def commit_partition_files(lake: Lake, dataset: str, day: date, files: list[str],
                           summary: dict[str, Any]) -> PartitionCommit:
    """Make the Parquet files already written inside the Delta table `dataset` (`files`: paths relative to the
    table's root, e.g. `dt=D/<attempt>/part-00000.parquet`) the day's partition in one commit that replaces the
    day and carries `summary`; create the table on the first write. Return the table's URI and the version made.

    This is how a writer that streams its own files (ingestion, Spark) commits them without copying: until the
    commit no Delta reader sees them. The table's schema is the files' schema plus `dt` (a string); files of
    another schema fail the commit and change nothing. Two writers of the same day committing at once: the second
    fails with `ConcurrentWriteError`. A day without rows is committed as one empty file, so it still exists.
    Before creating the table, days an older version of lakeloop committed by manifest are adopted into it."""
    table = open_table(lake, dataset)
    if table is None and adopt_manifest_partitions(lake, dataset):
        table = open_table(lake, dataset)
    return _commit_files(lake, dataset, day, files, summary, table)


def _commit_files(lake: Lake, dataset: str, day: date, files: list[str], summary: dict[str, Any],
                  table: DeltaTable | None) -> PartitionCommit:
    """`commit_partition_files` onto `table` as just opened (None: not created yet), without adopting manifest
    days."""
    from deltalake import CommitProperties, Schema
    from deltalake.exceptions import DeltaError
    from deltalake.transaction import create_table_with_add_actions

    if not files:
        raise ValueError(f"no file to commit as {dataset} of {day}: write at least one Parquet file (an empty one "
                         "for a day without rows) under the table's dt= folder first")
    actions, file_schema = _add_actions(lake, dataset, day, files)
    schema = file_schema.append(pa.field(PARTITION_COLUMN, pa.string()))
    uri = table_uri(lake, dataset)
    carried = json.dumps(summary)
    properties = CommitProperties(custom_metadata={
        SUMMARY_KEY: carried, "operationParameters": {"predicate": day_predicate(day)}})
    with _refused_commits(lake, dataset, day, "commit"):
        if table is None:
            try:
                create_table_with_add_actions(uri, Schema.from_arrow(schema), actions, partition_by=[PARTITION_COLUMN],
                                              storage_options=storage_options(lake), commit_properties=properties)
                return PartitionCommit(lake.uri(lake.path(dataset)), 0)
            except DeltaError as error:
                if "already exists" not in str(error):
                    raise
                table = open_table(lake, dataset)  # another writer created it meanwhile: commit on top of it
        _check_schema(lake, dataset, day, table, schema)
        table.create_write_transaction(actions, "overwrite", schema, partition_by=[PARTITION_COLUMN],
                                       partition_filters=[(PARTITION_COLUMN, "=", day.isoformat())],
                                       commit_properties=properties)
    return PartitionCommit(lake.uri(lake.path(dataset)), _version_carrying(lake, dataset, day, carried))


@contextmanager
def _refused_commits(lake: Lake, dataset: str, day: date, action: str) -> Iterator[None]:
    """A day's `action` ("write" or "commit") that delta-rs refused, as the errors the project's writers raise, both
    having changed nothing: another writer's commit of the day raced it (ConcurrentWriteError), or the table refused
    it otherwise (ValueError naming the table's schema)."""
    from deltalake.exceptions import CommitFailedError, DeltaError

    past, participle = {"write": ("wrote", "written"), "commit": ("committed", "committed")}[action]
    try:
        yield
    except CommitFailedError as error:
        raise ConcurrentWriteError(
            f"{dataset} of {day} was committed by another writer while this one {past} it ({error}); this {action} "
            "changed nothing. Let one run write a day at a time (the DAG's max_active_runs) and retry.") from error
    except DeltaError as error:
        raise ValueError(f"{dataset} of {day} could not be {participle} to the "
                         f"Delta table {table_uri(lake, dataset)} (its schema is {_schema_of(lake, dataset)}; this "
                         f"{action} changed nothing): {error}") from error


def adopt_manifest_partitions(lake: Lake, dataset: str) -> list[date]:
    """When the lake has no Delta table `dataset` yet but days committed by manifest (`_manifest.json`, how the lake
    committed before its datasets became Delta tables): commit each such day into the new table, its files where
    they are, one commit per day carrying the manifest (without its file list); return those days. Without this the
    earlier days would vanish from readers, which take the log's files only, and VACUUM, which deletes every file no
    commit names, would delete them. `commit_partition_files` calls it before creating a table; [] once the table
    exists."""
    if open_table(lake, dataset) is not None:
        return []
    listed = lake.filesystem.get_file_info(pafs.FileSelector(lake.path(dataset), allow_not_found=True))
    days = sorted(date.fromisoformat(info.base_name.removeprefix(f"{PARTITION_COLUMN}="))
                  for info in listed if info.type == pafs.FileType.Directory
                  and re.fullmatch(rf"{PARTITION_COLUMN}=\d{{4}}-\d{{2}}-\d{{2}}", info.base_name))
    adopted = []
    for day in days:
        manifest = lake.read_json(f"{lake.partition(dataset, day)}/{LEGACY_MANIFEST}")
        if manifest is None or not manifest.get("files"):
            continue
        files = [f"{PARTITION_COLUMN}={day.isoformat()}/{entry['name']}" for entry in manifest["files"]]
        _commit_files(lake, dataset, day, files, {key: value for key, value in manifest.items() if key != "files"},
                      open_table(lake, dataset))
        adopted.append(day)
    return adopted


def _add_actions(lake: Lake, dataset: str, day: date, files: list[str]) -> tuple[list[Any], pa.Schema]:
    """The Delta `add` actions of the day's files (size, modification time and row count from the store) and
    the Arrow schema they share; files of different schemas, or outside the day's folder, are refused."""
    from deltalake.transaction import AddAction

    folder = f"{PARTITION_COLUMN}={day.isoformat()}/"
    outside = [path for path in files if not path.startswith(folder)]
    if outside:
        raise ValueError(f"{outside} are not in {dataset}'s folder of {day} ({folder}): write the day's files "
                         "there, named relative to the table's root")
    actions, schemas = [], {}
    for path in files:
        full = lake.path(dataset, path)
        info = lake.filesystem.get_file_info(full)
        if info.type != pafs.FileType.File:
            raise FileNotFoundError(f"{lake.uri(full)} is not there: write it before committing it")
        metadata = pq.ParquetFile(full, filesystem=lake.filesystem).metadata
        schemas[path] = metadata.schema.to_arrow_schema().remove_metadata()
        actions.append(AddAction(path=path, size=info.size, partition_values={PARTITION_COLUMN: day.isoformat()},
                                 modification_time=int(info.mtime.timestamp() * 1000), data_change=True,
                                 stats=json.dumps({"numRecords": metadata.num_rows})))
    first = schemas[files[0]]
    differing = [path for path, schema in schemas.items() if not schema.equals(first)]
    if differing:
        raise ValueError(f"the files of {dataset} of {day} differ in schema: {differing} are not {first} as "
                         f"{files[0]} is. Write all of a day's files with one schema")
    return actions, first


def _check_schema(lake: Lake, dataset: str, day: date, table: DeltaTable, schema: pa.Schema) -> None:
    """Refuse files whose columns (names and Delta types) are not the table's: a Delta overwrite would otherwise
    replace the table's schema for every day."""
    from deltalake import Schema

    def columns(delta_schema: Any) -> list[tuple[str, str]]:
        return [(field.name, str(field.type)) for field in delta_schema.fields]

    if columns(Schema.from_arrow(schema)) != columns(table.schema()):
        given = ", ".join(f"{field.name} {field.type}" for field in schema)
        raise ValueError(f"{dataset} of {day} could not be committed to the Delta table {table_uri(lake, dataset)}: "
                         f"its schema is {_schema_of(lake, dataset)}, the files' is {given}. This commit changed "
                         "nothing; write the files with the table's columns and types")


def day_files(table: DeltaTable, day: date) -> list[str]:
    """The data files the table's log names for the day (paths on the lake's filesystem: no scheme), what every
    reader of a day reads; [] if the day has none."""
    return [uri.split("://", 1)[1] if "://" in uri else uri
            for uri in table.file_uris(file_pruning_predicate=day_predicate(day))]


def partition_files(lake: Lake, dataset: str, day: date, version: int | None = None) -> list[str]:
    """The data files of the day in the newest version of the Delta table `dataset`, or as of `version` (paths on
    the lake's filesystem, e.g. for Spark through `lake.spark_uri`); [] if the table or the day has none."""
    table = open_table(lake, dataset, version)
    return [] if table is None else day_files(table, day)


def _version_carrying(lake: Lake, dataset: str, day: date, carried: str) -> int:
    """The version of the newest commit that wrote the day with the summary `carried`."""
    return _newest_commit(open_table(lake, dataset), lambda commit: _predicate(commit) == day_predicate(day)
                          and commit.get(SUMMARY_KEY) == carried)["version"]


def _newest_commit(table: DeltaTable, matches: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    """The newest commit of the table's history that `matches`, or None. The log is read from its end in growing
    pages: the commit looked for is almost always among the last few (a day's own commit, the day just written),
    and reading the whole history costs a request per commit on an object store, on every commit and summary read."""
    limit = 16
    while True:
        commits = table.history(limit)  # newest first
        found = next((commit for commit in commits if matches(commit)), None)
        if found is not None or len(commits) < limit:
            return found
        limit *= 8


def _predicate(commit: dict[str, Any]) -> str | None:
    """The predicate a commit of the log names (a day's write: `dt = 'D'`), if any."""
    return commit.get("operationParameters", {}).get("predicate")


def _schema_of(lake: Lake, dataset: str) -> str:
    """The table's columns and types as one line, for error messages."""
    table = open_table(lake, dataset)
    return "not created yet" if table is None else ", ".join(
        f"{field.name} {getattr(field.type, 'type', field.type)}" for field in table.schema().fields)


def open_table(lake: Lake, dataset: str, version: int | None = None) -> DeltaTable | None:
    """The Delta table `dataset` as of `version` (default: its newest), or None if the lake has no such table yet.
    A version its log does not hold raises TableVersionUnavailableError. Any other failure (an unreachable store, a
    refused login) raises: it must not read as an empty table."""
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError, TableNotFoundError

    if version is not None and version < 0:
        raise ValueError(f"a table version is a whole number >= 0, not {version}")
    try:
        return DeltaTable(table_uri(lake, dataset), version=version, storage_options=storage_options(lake))
    except TableNotFoundError:
        return None
    except DeltaError as error:
        if version is None:
            raise
        newest = open_table(lake, dataset)
        raise TableVersionUnavailableError(
            f"{dataset} has no version {version} to read: its newest is {newest.version()}, and versions older "
            f"than the log's retention (delta.logRetentionDuration, 30 days) are gone. `lakeloop lake history "
            f"{dataset}` lists the versions it holds ({error})") from error


def read_partition(lake: Lake, dataset: str, day: date, columns: list[str] | None = None,
                   version: int | None = None) -> pa.Table | None:
    """The rows of the day's partition (without the `dt` column) in the table's newest version, or as of `version`
    (time travel), or None if the table or the day has none. A past version whose files VACUUM deleted raises
    TableVersionUnavailableError naming the retention.

    The files are those the Delta log names for the day, read with the lake's own pyarrow filesystem: reading
    through deltalake's dataset with a row filter aborts the interpreter at exit (deltalake 1.6.6)."""
    table = open_table(lake, dataset, version)
    if table is None:
        return None
    paths = day_files(table, day)
    if not paths:
        return None
    try:
        return pq.ParquetDataset(paths, filesystem=lake.filesystem, partitioning=None).read(columns=columns)
    except FileNotFoundError as error:
        raise TableVersionUnavailableError(_files_gone(lake, dataset, day, table.version())) from error


def _files_gone(lake: Lake, dataset: str, day: date, version: int) -> str:
    """Why the files the log names for a version's day are missing: the newest VACUUM and its retention, if any."""
    newest = open_table(lake, dataset)
    vacuums = [commit for commit in newest.history() if commit.get("operation") == VACUUM_OPERATION]
    if not vacuums or version == newest.version():
        return (f"{dataset} version {version} names files of {day} that the store no longer holds, and no VACUUM "
                "in the log deleted them: they were deleted outside Delta. Read the newest version.")
    vacuum = vacuums[0]
    retention = int(vacuum.get("operationParameters", {}).get("specifiedRetentionMillis") or 0) / 3_600_000
    return (f"{dataset} version {version} can no longer be read for {day}: VACUUM (version {vacuum['version']}, "
            f"{commit_time(vacuum):%Y-%m-%d %H:%M} UTC) deleted its files, which only versions older than its "
            f"retention of {retention:g} hours referenced. Read a newer version (`lakeloop lake history {dataset}`); "
            f"to keep versions readable longer, raise {RETENTION_SETTING} before the next VACUUM.")


def commit_time(commit: dict[str, Any]) -> datetime:
    """When a commit of the table's history was made (its `timestamp`, milliseconds since the epoch), in UTC."""
    return datetime.fromtimestamp(commit["timestamp"] / 1000, UTC)


def table_history(lake: Lake, dataset: str) -> list[dict[str, Any]] | None:
    """Every commit the table's log holds, newest first: `version`, `timestamp` (UTC), `operation` (WRITE, OPTIMIZE,
    VACUUM START/END, ...) and `predicate` (what a write replaced: `dt = 'D'`); None if the lake has no such table."""
    table = open_table(lake, dataset)
    if table is None:
        return None
    return [{"version": commit["version"], "timestamp": commit_time(commit), "operation": commit.get("operation"),
             "predicate": _predicate(commit)} for commit in table.history()]


def partition_summary(lake: Lake, dataset: str, day: date) -> dict[str, Any] | None:
    """The summary the newest commit that wrote the day carried (`replace_partition`), with that commit's version
    as `table_version`, or None if no commit in the table's log wrote it (none did, or the log's retention dropped
    it: the rows stay, see docs)."""
    table = open_table(lake, dataset)
    if table is None:
        return None
    commit = _newest_commit(table, lambda commit: _predicate(commit) == day_predicate(day) and SUMMARY_KEY in commit)
    return None if commit is None else {**json.loads(commit[SUMMARY_KEY]), "table_version": commit["version"]}
