"""What every lakeloop Spark job shares: arguments, the session, event dates, and reading and committing lake
partitions through `lakeloop.lake.Lake` (by the files a manifest or a Delta log names, never by listing).

See docs/etl-and-features.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import typing
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

from pyarrow import fs as pafs
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import IntegralType

from lakeloop.config import s3a_settings
from lakeloop.data_quality import DataQualityError
from lakeloop.delta import day_files, open_table
from lakeloop.lake import Lake, as_lake, is_abandoned, timed_name
from lakeloop.names import MOVIES

log = logging.getLogger("lakeloop.jobs")
DAY_MS = 86_400_000
Options = TypeVar("Options")
# The catalog columns the jobs use, with the lake's types (integer columns of another width are cast).
CATALOG_COLUMNS = {"item_id": "string", "title": "string", "year": "int", "genres": "array<string>"}
# Hadoop's s3a connector and the AWS SDK it needs, which the pyspark wheel lacks: resolved by `make setup`
# (jvm/spark/pom.xml). The project image puts them among Spark's own jars instead.


def day_job_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the two arguments every daily job takes: `--lake` and `--day`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--lake", required=True, help="lake URL (file://..., s3://bucket/prefix) or path")
    parser.add_argument("--day", required=True, type=date.fromisoformat, help="the day processed, YYYY-MM-DD")
    return parser


def add_option_arguments(parser: argparse.ArgumentParser, options_type: type) -> None:
    """Add one `--field-name` flag per field of the options dataclass (required when it has no default)."""
    hints = typing.get_type_hints(options_type)
    for option in dataclasses.fields(options_type):
        flag = "--" + option.name.replace("_", "-")
        help_text = option.metadata.get("help", "")
        if option.default is dataclasses.MISSING:
            parser.add_argument(flag, dest=option.name, type=hints[option.name], required=True, help=help_text)
        else:
            parser.add_argument(flag, dest=option.name, type=hints[option.name], default=option.default,
                                help=f"{help_text} (default: {option.default})")


def parse_day_job_args(description: str, options_type: type[Options],
                       argv: list[str] | None = None) -> tuple[Lake, date, Options]:
    """Parse `--lake`, `--day` and the job's options."""
    parser = day_job_parser(description)
    add_option_arguments(parser, options_type)
    args = parser.parse_args(argv)
    options = options_type(**{option.name: getattr(args, option.name) for option in dataclasses.fields(options_type)})
    return Lake.from_url(args.lake), args.day, options


def run_day_job(description: str, app_name: str, run: Callable[[SparkSession, Lake, date, Any], dict],
                options_type: type, argv: list[str] | None = None) -> dict:
    """The spark-submit entry point of a job that processes one day: parse, run, stop Spark."""
    lake, day, options = parse_day_job_args(description, options_type, argv)
    spark = spark_session(f"{app_name}-{day}")
    use_lake(spark, lake)
    try:
        return run(spark, lake, day, options)
    finally:
        spark.stop()


def spark_session(app_name: str) -> SparkSession:
    """The job's Spark session (master and conf come from spark-submit)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spark = SparkSession.builder.appName(app_name).getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def use_lake(spark: SparkSession, lake: Lake) -> None:
    """Let the session reach the lake: for an S3 lake, s3a's endpoint, path style, region and credentials from the
    AWS variables (`lakeloop.config.s3a_settings`), set on the session before its first read of the lake."""
    if lake.spark_uri(lake.root).startswith("s3a://"):
        for key, value in s3a_settings().items():
            spark.conf.set(key, value)


def utc_date(timestamp: str) -> Column:
    """The UTC calendar date of a timestamp column, whatever the session time zone."""
    return F.date_from_unix_date(F.floor(F.unix_millis(F.col(timestamp)) / DAY_MS).cast("int"))


def existing_partition_days(lake: Lake, dataset: str, days: list[date]) -> list[date]:
    """The days among `days` for which `dataset` has a committed partition: files its Delta log names for the day
    if the dataset is a Delta table, else a published manifest."""
    table = open_table(lake, dataset)
    if table is not None:
        return [day for day in days if day_files(table, day)]
    return [day for day in days if lake.has_partition(dataset, day)]


def read_table(spark: SparkSession, lake: Lake, dataset: str, day: date, table: str = "") -> DataFrame:
    """The rows of the day's committed partition of `dataset` (or of its `table` subdirectory), as a plain Parquet
    scan (no partition column) of exactly the files its commit names: the Delta log's list for the day if the
    dataset is a Delta table, else its manifest's."""
    delta_table = None if table else open_table(lake, dataset)
    files = day_files(delta_table, day) if delta_table is not None else lake.partition_files(dataset, day, table)
    if not files:
        where = lake.spark_uri("/".join(filter(None, [lake.partition(dataset, day), table])))
        raise FileNotFoundError(f"{where} has no committed data files: run the upstream task for {day} first")
    return spark.read.parquet(*[lake.spark_uri(path) for path in files])


def read_partitions(spark: SparkSession, lake: Lake, dataset: str, days: list[date]) -> DataFrame:
    """Read the committed day partitions of `dataset` among `days`, each day's rows with its date as `dt`."""
    present = existing_partition_days(lake, dataset, days)
    if not present:
        raise FileNotFoundError(f"no partition of {lake.spark_uri(lake.path(dataset))} for days {days[0]}..{days[-1]}; "
                                "run the upstream task for those days first")
    frames = [read_table(spark, lake, dataset, day).withColumn("dt", F.lit(day)) for day in present]
    return functools.reduce(DataFrame.unionByName, frames)


def read_catalog(spark: SparkSession, lake: Lake) -> DataFrame:
    """The movie catalog (`MOVIES`, read whole) conformed to the lake's types, or a `DataQualityError` before any
    work of the day is done.

    Ids are strings throughout the lake (ingestion writes an event's integer id as its decimal text), so a catalog
    whose `item_id` is an integer is read as that text, and a year of any integer width as an int; an id of another
    type (a float's text would never match an event's), a missing column or a retyped one is refused with what the
    catalog must hold.
    """
    url = lake.spark_uri(lake.path(MOVIES))
    catalog = spark.read.parquet(url)
    found = {column.name: column.dataType for column in catalog.schema}
    for name, expected in CATALOG_COLUMNS.items():
        if isinstance(found.get(name), IntegralType) and found[name].simpleString() != expected:
            log.info("%s: %s is %s, read as %s", url, name, found[name].simpleString(), expected)
            catalog = catalog.withColumn(name, F.col(name).cast(expected))
            found[name] = catalog.schema[name].dataType
    problems = [f"{name} is missing" if name not in found else f"{name} is {found[name].simpleString()}"
                for name, expected in CATALOG_COLUMNS.items()
                if name not in found or found[name].simpleString() != expected]
    if problems:
        expected = ", ".join(f"{name} {type_name}" for name, type_name in CATALOG_COLUMNS.items())
        raise DataQualityError(f"the movie catalog {url} does not fit the lake: {'; '.join(problems)}. Rewrite it "
                               f"with the columns {expected} (an integer item_id is read as its decimal text)")
    return catalog


def _parquet_writer(frame: DataFrame):
    """`frame.write`, with timestamps stored as Parquet TIMESTAMP_MICROS UTC instants — the encoding ingestion uses —
    instead of Spark's legacy INT96 (which other readers take for zone-less nanoseconds)."""
    frame.sparkSession.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    return frame.write


def write_partition(tables: dict[str, DataFrame], lake: Lake | Path, dataset: str, day: date, manifest: dict) -> str:
    """Write the day's partition of `dataset` — each frame into its subdirectory — committed atomically with
    `manifest` (plus the file list) through `Lake.staged_partition`; return the partition's URL."""
    lake = as_lake(lake)
    with lake.staged_partition(dataset, day) as staged:
        for name, frame in tables.items():
            _parquet_writer(frame).mode("error").parquet(lake.spark_uri(f"{staged.directory}/{name}"))
        staged.manifest.update(manifest)
    return _committed(lake, dataset, day, manifest)


def _committed(lake: Lake, dataset: str, day: date, manifest: dict) -> str:
    url = lake.uri(lake.partition(dataset, day))
    log.info("committed %s: %s", url, manifest)
    return url


DAYS_STAGING_PREFIX = ".staging-days-"


def write_day_partitions(frame: DataFrame, lake: Lake | Path, dataset: str, manifests: dict[date, dict]) -> list[str]:
    """Write `frame` (with a date column `dt`) as one partition per day of `manifests`, each committed atomically;
    return the URLs of the partitions written (days of `manifests` without rows are not written).

    One Spark job writes every day (`partitionBy("dt")`) under a staging directory of the dataset,
    `<dataset>/.staging-days-<id>/dt=D/`, which readers never see (they follow manifests and `dt=` partitions).
    Then each day is committed on its own through `Lake.staged_partition`: its files are moved into the day's
    staging area — a rename on local disk, a server-side copy per file on an object store (the data does not
    pass through the driver) — and committed with its manifest: swapped in by rename, or published by the
    manifest PUT. A failure before a day's commit leaves that day's previous partition as it was; days already
    committed keep the run's complete rows for their day (a rerun writes the same). The staging directory
    is removed at the end; a killed run's is removed by a later run once abandoned (`lakeloop.lake.is_abandoned`),
    never while a concurrent run may still be moving files out of it.
    """
    lake = as_lake(lake)
    listed = lake.filesystem.get_file_info(pafs.FileSelector(lake.path(dataset), allow_not_found=True))
    now = datetime.now(UTC)
    _delete_dirs(lake, [info.path for info in listed if info.base_name.startswith(DAYS_STAGING_PREFIX)
                        and is_abandoned(info.base_name, DAYS_STAGING_PREFIX, now)])
    job_dir = lake.path(dataset, timed_name(DAYS_STAGING_PREFIX))
    written = []
    try:
        _parquet_writer(frame).partitionBy("dt").parquet(lake.spark_uri(job_dir))
        for day, manifest in sorted(manifests.items()):
            day_dir = f"{job_dir}/dt={day.isoformat()}"
            if lake.filesystem.get_file_info(day_dir).type != pafs.FileType.Directory:
                continue
            with lake.staged_partition(dataset, day) as staged:
                lake.move_files(day_dir, staged.directory)
                staged.manifest.update(manifest)
            written.append(_committed(lake, dataset, day, manifest))
    finally:
        _delete_dirs(lake, [job_dir])
    return written


def _delete_dirs(lake: Lake, directories: list[str]) -> None:
    for directory in directories:
        try:
            lake.filesystem.delete_dir(directory)
        except FileNotFoundError:
            pass
