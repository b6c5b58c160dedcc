"""MovieLens 100K replayed into a lake as the daily loop would have it: the catalog, one raw Delta commit per day, then
the real ETL and features jobs (the pipeline's time split). Used by the quality and scoring benchmarks.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from jobs import etl, features
from lakeloop.delta import PartitionCommit, replace_partition
from lakeloop.ingest.schema import RATINGS_SCHEMA
from lakeloop.lake import as_lake, window_days
from lakeloop.names import RAW_RATINGS
from lakeloop.replay import build_events, write_catalog

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from lakeloop.movielens import MovieLens

END_DAY = date(2026, 11, 20)


def raw_table(events: pa.Table) -> pa.Table:
    """Replay events (`lakeloop.replay.build_events`) in the raw lake schema ingestion writes."""
    return events.cast(RATINGS_SCHEMA.output_schema)


def write_raw_day(lake: Path, day: date, raw: pa.Table) -> PartitionCommit:
    """Commit `raw` as the day of the raw Delta table, as ingestion would have (events arrived that day), with the
    counts its summary carries (all read rows written, none rejected)."""
    counts = {"read": raw.num_rows, "written": raw.num_rows, "rejected": 0}
    return replace_partition(as_lake(lake), RAW_RATINGS, day, raw,
                             {"day": day.isoformat(), "counts": counts, "written_by": "bench.support.movielens_lake"})


def replay_to_lake(movielens: MovieLens, lake: Path, days: int, end_day: date = END_DAY) -> list[date]:
    """The catalog and, for each day of the window, that day's events (as the replay maps them) as the raw table's
    day."""
    write_catalog(movielens, lake)
    raw = raw_table(build_events(movielens, days, end_day))
    event_day = pc.cast(raw["ts"], pa.date32())
    replayed = window_days(end_day, days)
    for day in replayed:
        write_raw_day(lake, day, raw.filter(pc.equal(event_day, pa.scalar(day, pa.date32()))))
    return replayed


def curate_days(spark: SparkSession, lake: Path, days: int, end_day: date = END_DAY) -> None:
    """The ETL job for every replayed day: the curated ratings of the window."""
    for day in window_days(end_day, days):
        etl.run(spark, lake, day)


def time_split_features(spark: SparkSession, lake: Path, days: int, end_day: date = END_DAY) -> None:
    """ETL for every replayed day, then the features job for the last day over the whole window: its most recent
    10% of ratings by time are the evaluation set."""
    curate_days(spark, lake, days, end_day)
    features.run(spark, lake, end_day, features.FeatureOptions(window_days=days))
