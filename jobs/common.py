"""What every lakeloop Spark job shares: arguments, the session, event dates and atomic partition writes.

Jobs take their parameters as command-line arguments (an options dataclass per job, turned into
`--kebab-case` flags), and everything about Spark itself (master, memory, shuffle partitions) from
`spark-submit`, i.e. from the Airflow connection `spark_default`: the code sets no master or Spark conf,
so the same job runs on `local[*]` and on a cluster.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import typing
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from lakeloop.config import lake_url_to_path
from lakeloop.lake import clean_stale_staging, partition_path, staging_path, swap_in

log = logging.getLogger("lakeloop.jobs")
DAY_MS = 86_400_000
MOVIES = "reference/movies"
Options = TypeVar("Options")


def day_job_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the two arguments every daily job takes: `--lake` and `--day`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--lake", required=True, help="lake URL (file://...) or path")
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
                       argv: list[str] | None = None) -> tuple[Path, date, Options]:
    """Parse `--lake`, `--day` and the job's options."""
    parser = day_job_parser(description)
    add_option_arguments(parser, options_type)
    args = parser.parse_args(argv)
    options = options_type(**{option.name: getattr(args, option.name) for option in dataclasses.fields(options_type)})
    return lake_path(args.lake), args.day, options


def run_day_job(description: str, app_name: str, run: Callable[[SparkSession, Path, date, Any], dict],
                options_type: type, argv: list[str] | None = None) -> dict:
    """The spark-submit entry point of a job that processes one day: parse, run, stop Spark."""
    lake, day, options = parse_day_job_args(description, options_type, argv)
    spark = spark_session(f"{app_name}-{day}")
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


def lake_path(url: str) -> Path:
    """The lake root for a `--lake` argument."""
    return lake_url_to_path(url)


def utc_date(timestamp: str) -> Column:
    """The UTC calendar date of a timestamp column, whatever the session time zone."""
    return F.date_from_unix_date(F.floor(F.unix_millis(F.col(timestamp)) / DAY_MS).cast("int"))


def existing_partition_days(lake: Path, dataset: str, days: list[date]) -> list[date]:
    """The days among `days` for which `dataset` has a partition."""
    return [day for day in days if partition_path(lake, dataset, day).exists()]


def read_partitions(spark: SparkSession, lake: Path, dataset: str, days: list[date]) -> DataFrame:
    """Read the existing day partitions of `dataset` among `days`, with the `dt` column kept."""
    paths = [str(partition_path(lake, dataset, day)) for day in existing_partition_days(lake, dataset, days)]
    if not paths:
        raise FileNotFoundError(f"no partition of {lake / dataset} for days {days[0]}..{days[-1]}; "
                                "run the upstream task for those days first")
    return spark.read.option("basePath", str(lake / dataset)).parquet(*paths)


def _parquet_writer(frame: DataFrame):
    """`frame.write`, with timestamps stored as Parquet TIMESTAMP_MICROS UTC instants — the encoding ingestion uses —
    instead of Spark's legacy INT96 (which other readers take for zone-less nanoseconds)."""
    frame.sparkSession.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    return frame.write


def _commit(staged: Path, final: Path, manifest: dict) -> Path:
    (staged / "_manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    swap_in(staged, final)
    log.info("wrote %s: %s", final, manifest)
    return final


def write_partition(tables: dict[str, DataFrame], lake: Path, dataset: str, day: date, manifest: dict) -> Path:
    """Write the day's partition of `dataset` — each frame into its subdirectory (`""`: the partition itself) —
    with a `_manifest.json`, staged aside and swapped in atomically."""
    final = partition_path(lake, dataset, day)
    clean_stale_staging(final.parent)
    staged = staging_path(final)
    try:
        for name, frame in tables.items():
            _parquet_writer(frame).mode("error").parquet(str(staged / name))
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return _commit(staged, final, manifest)


def write_day_partitions(frame: DataFrame, lake: Path, dataset: str, manifests: dict[date, dict]) -> list[Path]:
    """Write `frame` (with a date column `dt`) as one partition per day of `manifests`, each swapped in atomically.

    One Spark job writes every day into a hidden staging directory; then each day's directory gets its
    manifest and replaces the live partition by rename. Days of `manifests` without rows are not written.
    """
    dataset_dir = lake / dataset
    clean_stale_staging(dataset_dir)
    staged_root = staging_path(dataset_dir / "days")
    try:
        _parquet_writer(frame).partitionBy("dt").parquet(str(staged_root))
        return [_commit(staged_root / f"dt={day.isoformat()}", partition_path(lake, dataset, day), manifest)
                for day, manifest in sorted(manifests.items()) if (staged_root / f"dt={day.isoformat()}").exists()]
    finally:
        shutil.rmtree(staged_root, ignore_errors=True)
