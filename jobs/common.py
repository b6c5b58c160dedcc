"""What every lakeloop Spark job shares: arguments, the session, and atomic partition writes."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from datetime import date
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from lakeloop.config import lake_url_to_path
from lakeloop.lake import clean_stale_staging, partition_path, staging_path, swap_in

log = logging.getLogger("lakeloop.jobs")


def day_job_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the two arguments every daily job takes: `--lake` and `--day`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--lake", required=True, help="lake URL (file://...) or path")
    parser.add_argument("--day", required=True, type=date.fromisoformat, help="the day processed, YYYY-MM-DD")
    return parser


def run_day_job(description: str, app_name: str, run: Callable[[SparkSession, Path, date], dict],
                argv: list[str] | None = None) -> dict:
    """The spark-submit entry point of a job that processes one day: parse, run, stop Spark."""
    args = day_job_parser(description).parse_args(argv)
    spark = spark_session(f"{app_name}-{args.day}")
    try:
        return run(spark, lake_path(args.lake), args.day)
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


def read_partitions(spark: SparkSession, lake: Path, dataset: str, days: list[date]) -> DataFrame:
    """Read the existing day partitions of `dataset` among `days`, with the `dt` column kept."""
    paths = [str(partition_path(lake, dataset, day)) for day in days if partition_path(lake, dataset, day).exists()]
    if not paths:
        raise FileNotFoundError(f"no partition of {lake / dataset} for days {days[0]}..{days[-1]}; "
                                "run the upstream task for those days first")
    return spark.read.option("basePath", str(lake / dataset)).parquet(*paths)


def write_partition(df: DataFrame, lake: Path, dataset: str, day: date, manifest: dict) -> Path:
    """Write `df` as the day's partition of `dataset`, swapped in atomically, with a `_manifest.json`."""
    final = partition_path(lake, dataset, day)
    clean_stale_staging(final.parent)
    staged = staging_path(final)
    df.write.mode("error").parquet(str(staged))
    (staged / "_manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    swap_in(staged, final)
    log.info("wrote %s: %s", final, manifest)
    return final
