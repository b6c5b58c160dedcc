"""The driver side of the direct Parquet path: when the training DataFrame is a plain Parquet scan, plan which
rows of which row groups each worker reads itself (`tfspark.task.parquet_read`) instead of Spark converting
every row for `mapInArrow`; anything else raises `DirectPathUnavailable` and Spark feeds the workers.
See docs/tfspark.md.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from tfspark.storage import resolve_uri
from tfspark.task.parquet_read import ParquetFeedPlan, RowGroupSlice

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

logger = logging.getLogger("tfspark")

PARQUET_DIRECT = "parquet-direct"
SPARK_ARROW = "spark-arrow"
PARQUET_DIRECT_CONF = "spark.tfspark.parquetDirect"
_FOOTER_THREADS = 8
_LOGICAL_RELATION = "org.apache.spark.sql.execution.datasources.LogicalRelation"
_HADOOP_FS_RELATION = "org.apache.spark.sql.execution.datasources.HadoopFsRelation"
_PARQUET_FORMAT = "org.apache.spark.sql.execution.datasources.parquet.ParquetFileFormat"
_ATTRIBUTE = "org.apache.spark.sql.catalyst.expressions.AttributeReference"


class DirectPathUnavailable(Exception):
    """Why the training DataFrame cannot be read straight from its Parquet files (Spark feeds it instead)."""


@dataclass(frozen=True)
class ParquetScan:
    """A DataFrame that is only columns of Parquet files: the files (URIs, sorted) and the columns, in order."""

    files: tuple[str, ...]
    columns: tuple[str, ...]


@dataclass(frozen=True)
class RowGroup:
    """One row group of one Parquet file and its row count."""

    path: str
    index: int
    num_rows: int


def parquet_scan(frame: DataFrame) -> ParquetScan:
    """The files and columns of `frame` if its optimized plan is a plain Parquet scan; else why not.

    Accepted: a `LogicalRelation` over a Parquet `HadoopFsRelation`, optionally under one `Project` of
    plain column references, selecting no partition column. Anything else (a filter, a computed or renamed
    column, a join, a limit, a cached or in-memory frame, a DataSource V2 scan) raises `DirectPathUnavailable`.
    """
    try:
        plan = frame._jdf.queryExecution().optimizedPlan()
        if plan.nodeName() == "Project":
            projected = plan.projectList()
            for position in range(projected.size()):
                expression = projected.apply(position)
                if expression.getClass().getName() != _ATTRIBUTE:
                    raise DirectPathUnavailable(f"the projection computes {expression.sql()}")
            plan = plan.child()
        if plan.getClass().getName() != _LOGICAL_RELATION:
            raise DirectPathUnavailable(f"the plan is not a plain file scan: {_first_line(plan.toString())}")
        relation = plan.relation()
        if relation.getClass().getName() != _HADOOP_FS_RELATION:
            raise DirectPathUnavailable(f"the relation is {relation.getClass().getSimpleName()}, not files")
        if relation.fileFormat().getClass().getName() != _PARQUET_FORMAT:
            raise DirectPathUnavailable(f"the files are {relation.fileFormat().toString()}, not Parquet")
        partition_columns = set(relation.partitionSchema().fieldNames())
        files = tuple(sorted(relation.location().inputFiles()))
    except DirectPathUnavailable:
        raise
    except Exception as error:  # Spark Connect frames have no JVM plan; py4j errors on unexpected plans
        raise DirectPathUnavailable(f"could not inspect the plan ({type(error).__name__}: {error})") from error
    columns = tuple(frame.columns)
    selected_partitions = sorted(partition_columns.intersection(columns))
    if selected_partitions:
        raise DirectPathUnavailable(f"partition column(s) {selected_partitions} come from directory names")
    if len(set(columns)) != len(columns):
        raise DirectPathUnavailable(f"duplicate column names in {list(columns)}")
    return ParquetScan(files, columns)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def read_row_groups(scan: ParquetScan, schema: pa.Schema) -> list[RowGroup]:
    """Every row group of the scan's files, from their footers, checking each file can give `schema`.

    Raises `DirectPathUnavailable` when a file cannot be opened, lacks a column, or holds a column pyarrow
    cannot cast to the type Spark reads it as.
    """

    def footer(uri: str) -> pq.FileMetaData:
        try:
            filesystem, path = resolve_uri(uri)
            return pq.read_metadata(path, filesystem=filesystem)
        except (OSError, ValueError, pa.ArrowException) as error:
            raise DirectPathUnavailable(f"pyarrow cannot read {uri} ({error})") from error

    with ThreadPoolExecutor(min(_FOOTER_THREADS, max(1, len(scan.files)))) as pool:
        footers = list(pool.map(footer, scan.files))
    groups = []
    for uri, metadata in zip(scan.files, footers, strict=True):
        file_schema = metadata.schema.to_arrow_schema()
        for field in schema:
            if field.name not in file_schema.names:
                raise DirectPathUnavailable(f"{uri} has no column {field.name!r} (Spark would read nulls)")
            found = file_schema.field(field.name).type
            if found != field.type and not _castable(found, field.type):
                raise DirectPathUnavailable(f"{uri}: column {field.name!r} is {found}, Spark reads {field.type}")
        groups += [RowGroup(uri, index, metadata.row_group(index).num_rows) for index in range(metadata.num_row_groups)]
    return groups


def _castable(source: pa.DataType, target: pa.DataType) -> bool:
    try:
        pa.array([], type=source).cast(target)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        return False
    return True


def plan_row_groups(row_groups: Sequence[RowGroup], num_workers: int) -> tuple[tuple[RowGroupSlice, ...], ...]:
    """Split the row groups, in order, into `num_workers` contiguous shards whose row counts differ by one at most.

    Worker k takes rows `[total*k // n, total*(k+1) // n)` of the row groups laid end to end, so a row group
    on a boundary is read in part by two workers. Deterministic: the same row groups give the same shards.
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be positive, got {num_workers}")
    total = sum(group.num_rows for group in row_groups)
    bounds = [total * rank // num_workers for rank in range(num_workers + 1)]
    shards: list[list[RowGroupSlice]] = [[] for _ in range(num_workers)]
    start = 0
    for group in row_groups:
        end = start + group.num_rows
        for rank in range(num_workers):
            low, high = max(start, bounds[rank]), min(end, bounds[rank + 1])
            if low < high:
                shards[rank].append(RowGroupSlice(group.path, group.index, low - start, high - low))
        start = end
    return tuple(tuple(shard) for shard in shards)


def plan_parquet_feed(frame: DataFrame, num_workers: int) -> ParquetFeedPlan:
    """Plan the direct path for `frame` over `num_workers`, or raise `DirectPathUnavailable` saying why not."""
    from pyspark.sql.pandas.types import to_arrow_schema

    spark = frame.sparkSession
    if spark.conf.get(PARQUET_DIRECT_CONF, "true").lower() != "true":
        raise DirectPathUnavailable(f"{PARQUET_DIRECT_CONF} is false")
    scan = parquet_scan(frame)
    schema = to_arrow_schema(frame.schema)
    groups = read_row_groups(scan, schema)
    batch_rows = int(spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch", "10000"))
    return ParquetFeedPlan(
        schema=schema,
        shards=plan_row_groups(groups, num_workers),
        batch_rows=batch_rows if batch_rows > 0 else None,
        num_files=len(scan.files),
        num_row_groups=len(groups),
    )


def plan_feed(frame: DataFrame, num_workers: int) -> tuple[ParquetFeedPlan | None, str | None]:
    """The direct Parquet plan when `frame` qualifies, else None and why not; the choice is logged."""
    try:
        parquet = plan_parquet_feed(frame, num_workers)
    except DirectPathUnavailable as reason:
        logger.info("feed path: %s (not %s: %s)", SPARK_ARROW, PARQUET_DIRECT, reason)
        return None, str(reason)
    logger.info(
        "feed path: %s (%d files, %d row groups, rows per worker %s)",
        PARQUET_DIRECT,
        parquet.num_files,
        parquet.num_row_groups,
        parquet.worker_rows,
    )
    return parquet, None
