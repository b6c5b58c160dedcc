"""Delta Lake tables of the lake (`dt`-partitioned), written and read from Python through delta-rs (`deltalake`):
one commit per day's write, so any Delta reader sees whole days only (docs/deployment.md, "Delta tables")."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import date
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from lakeloop.config import aws_region, s3_endpoint
from lakeloop.lake import ConcurrentWriteError, Lake

if TYPE_CHECKING:
    from deltalake import DeltaTable

PARTITION_COLUMN = "dt"
SUMMARY_KEY = "lakeloop.summary"


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


def replace_partition(lake: Lake, dataset: str, day: date, rows: pa.Table, summary: dict[str, Any]) -> str:
    """Make `rows` the day's partition of the Delta table `dataset` in one commit that carries `summary` (what the
    job did, for `partition_summary`); create the table on the first write. Return the table's URI.

    The table's schema is enforced: rows of another schema fail the write and change nothing. Two writers of the
    same day: the second commit conflicts and fails with `ConcurrentWriteError`."""
    from deltalake import CommitProperties, write_deltalake
    from deltalake.exceptions import CommitFailedError, DeltaError

    uri = table_uri(lake, dataset)
    day_rows = rows.append_column(PARTITION_COLUMN, pa.array([day.isoformat()] * rows.num_rows, pa.string()))
    try:
        write_deltalake(uri, day_rows, mode="overwrite", predicate=day_predicate(day),
                        partition_by=[PARTITION_COLUMN], storage_options=storage_options(lake),
                        commit_properties=CommitProperties(custom_metadata={SUMMARY_KEY: json.dumps(summary)}))
    except CommitFailedError as error:
        raise ConcurrentWriteError(
            f"{dataset} of {day} was committed by another writer while this one wrote it ({error}); this write "
            "changed nothing. Let one run write a day at a time (the DAG's max_active_runs) and retry.") from error
    except DeltaError as error:
        raise ValueError(f"{dataset} of {day} could not be written to the Delta table {uri} (its schema is "
                         f"{_schema_of(lake, dataset)}; this write changed nothing): {error}") from error
    return lake.uri(lake.path(dataset))


def _schema_of(lake: Lake, dataset: str) -> str:
    """The table's columns and types as one line, for error messages."""
    table = open_table(lake, dataset)
    return "not created yet" if table is None else ", ".join(
        f"{field.name} {getattr(field.type, 'type', field.type)}" for field in table.schema().fields)


def open_table(lake: Lake, dataset: str) -> DeltaTable | None:
    """The newest version of the Delta table `dataset`, or None if the lake has no such table yet. Any other
    failure (an unreachable store, a refused login) raises: it must not read as an empty table."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(table_uri(lake, dataset), storage_options=storage_options(lake))
    except TableNotFoundError:
        return None


def read_partition(lake: Lake, dataset: str, day: date, columns: list[str] | None = None) -> pa.Table | None:
    """The rows of the day's partition in the table's newest version (without the `dt` column), or None if the
    table or the day has none.

    The files are those the Delta log names for the day, read with the lake's own pyarrow filesystem: reading
    through deltalake's dataset with a row filter aborts the interpreter at exit (deltalake 1.6.6)."""
    table = open_table(lake, dataset)
    if table is None:
        return None
    files = table.file_uris(file_pruning_predicate=day_predicate(day))
    if not files:
        return None
    paths = [uri.split("://", 1)[1] if "://" in uri else uri for uri in files]
    return pq.ParquetDataset(paths, filesystem=lake.filesystem, partitioning=None).read(columns=columns)


def partition_summary(lake: Lake, dataset: str, day: date) -> dict[str, Any] | None:
    """The summary the newest commit that wrote the day carried (`replace_partition`), or None if no commit in the
    table's log wrote it (none did, or the log's retention dropped it: the rows stay, see docs)."""
    table = open_table(lake, dataset)
    if table is None:
        return None
    for commit in table.history():  # newest first
        if commit.get("operationParameters", {}).get("predicate") == day_predicate(day) and SUMMARY_KEY in commit:
            return json.loads(commit[SUMMARY_KEY])
    return None
