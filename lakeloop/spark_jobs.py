"""What every lakeloop Spark job shares: arguments, the session, event dates, and reading and committing the days of
the lake's Delta tables (by the files the Delta log names, never by listing).

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
from lakeloop.delta import AttemptFolder, PartitionCommit, day_files, open_table, partition_files
from lakeloop.features import DayFeatures
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
    """The days among `days` for which the Delta table `dataset` has a committed partition (files its log names
    for the day); [] if the lake has no such table yet."""
    files = _files_by_day(lake, dataset, days)
    return [day for day in days if files[day]]


def _files_by_day(lake: Lake, dataset: str, days: list[date]) -> dict[date, list[str]]:
    """The data files the Delta table's log names for each of `days` (one read of the log); [] for each day if the
    lake has no such table yet."""
    table = open_table(lake, dataset)
    return {day: day_files(table, day) if table is not None else [] for day in days}


def read_table(spark: SparkSession, lake: Lake, dataset: str, day: date, version: int | None = None) -> DataFrame:
    """The rows of the day's committed partition of the Delta table `dataset` (in its newest version, or as of
    `version`), as a plain Parquet scan (no partition column) of exactly the files its log names for the day."""
    files = partition_files(lake, dataset, day, version)
    if not files:
        raise FileNotFoundError(f"{lake.spark_uri(lake.partition(dataset, day))} has no committed data files: run "
                                f"the upstream task for {day} first")
    return _read_files(spark, lake, files)


def read_feature_table(spark: SparkSession, features: DayFeatures, table: str) -> DataFrame:
    """One table of a day's features (`lakeloop.features.TRAIN`, `USER_VOCAB`...), of the set its features run
    committed (`DayFeatures`)."""
    return _read_files(spark, features.lake, features.files(table))


def _read_files(spark: SparkSession, lake: Lake, files: list[str]) -> DataFrame:
    """A Parquet scan of exactly `files` (paths on the lake's filesystem, at least one)."""
    return spark.read.parquet(*[lake.spark_uri(path) for path in files])


def read_partitions(spark: SparkSession, lake: Lake, dataset: str, days: list[date]) -> DataFrame:
    """Read the committed day partitions of the Delta table `dataset` among `days` (one read of its log), each day's
    rows with its date as `dt`."""
    files = _files_by_day(lake, dataset, days)
    present = [day for day in days if files[day]]
    if not present:
        raise FileNotFoundError(f"no partition of {lake.spark_uri(lake.path(dataset))} for days {days[0]}..{days[-1]}; "
                                "run the upstream task for those days first")
    frames = [_read_files(spark, lake, files[day]).withColumn("dt", F.lit(day)) for day in present]
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


def write_partition(frame: DataFrame, lake: Lake | Path, dataset: str, day: date,
                    summary: dict[str, Any]) -> PartitionCommit:
    """Make `frame` the day's partition of the Delta table `dataset` in one commit carrying `summary`: Spark writes
    the files into a folder of this attempt inside the day's folder, then `commit_partition_files` names them in
    the log. A failure before the commit leaves the day's previous version (the folder's files are deleted)."""
    lake = as_lake(lake)
    folder = AttemptFolder(lake, dataset, day, timed_name(SPARK_ATTEMPT_PREFIX))
    try:
        _parquet_writer(frame).mode("error").parquet(lake.spark_uri(folder.path))
    except BaseException:
        folder.discard()
        raise
    return _committed(folder, summary)


def _committed(folder: AttemptFolder, summary: dict[str, Any]) -> PartitionCommit:
    commit = folder.commit(summary)
    log.info("committed %s of %s (version %d): %s", folder.dataset, folder.day, commit.version, summary)
    return commit


SPARK_ATTEMPT_PREFIX = "spark-"  # a Spark job's folder of files inside the day's folder of the table it commits
DAYS_STAGING_PREFIX = "_staging-days-"


def write_day_partitions(frame: DataFrame, lake: Lake | Path, dataset: str,
                         summaries: dict[date, dict[str, Any]]) -> list[PartitionCommit]:
    """Write `frame` (with a date column `dt`) as one partition per day of `summaries` of the Delta table `dataset`,
    each its own commit; return the commits (days of `summaries` without rows are not written).

    One Spark job writes every day (`partitionBy("dt")`) under a staging folder of the table,
    `<dataset>/_staging-days-<id>/dt=D/`, which no commit names. Then each day's files are moved into an attempt
    folder of the day — a rename on local disk, a server-side copy per file on an object store (the data does not
    pass through the driver) — and committed. A failure before a day's commit leaves that day's previous version;
    days already committed keep the run's complete rows for their day (a rerun writes the same). The staging folder
    is removed at the end; a killed run's is removed by a later run once abandoned (`lakeloop.lake.is_abandoned`),
    never while a concurrent run may still be moving files out of it.
    """
    lake = as_lake(lake)
    listed = lake.filesystem.get_file_info(pafs.FileSelector(lake.path(dataset), allow_not_found=True))
    now = datetime.now(UTC)
    _delete_dirs(lake, [info.path for info in listed if info.base_name.startswith(DAYS_STAGING_PREFIX)
                        and is_abandoned(info.base_name, DAYS_STAGING_PREFIX, now)])
    job_dir = lake.path(dataset, timed_name(DAYS_STAGING_PREFIX))
    attempt = timed_name(SPARK_ATTEMPT_PREFIX)
    written = []
    try:
        _parquet_writer(frame).partitionBy("dt").parquet(lake.spark_uri(job_dir))
        for day, summary in sorted(summaries.items()):
            day_dir = f"{job_dir}/dt={day.isoformat()}"
            if lake.filesystem.get_file_info(day_dir).type != pafs.FileType.Directory:
                continue
            folder = AttemptFolder(lake, dataset, day, attempt)
            lake.move_files(day_dir, folder.path)
            written.append(_committed(folder, summary))
    finally:
        _delete_dirs(lake, [job_dir])
    return written


def _delete_dirs(lake: Lake, directories: list[str]) -> None:
    for directory in directories:
        try:
            lake.filesystem.delete_dir(directory)
        except FileNotFoundError:
            pass
