"""One synthetic day's features for the training benchmark (`bench.training`): the e2e benchmark's day of events
committed as the day's raw ratings, then the project's ETL and features jobs; built once per day size and reused from
its cache directory.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from bench.support.movielens_lake import END_DAY, raw_table, write_raw_day
from bench.support.synthetic_events import generate_events
from jobs import etl, features
from lakeloop.features import read_feature_summary
from lakeloop.replay import write_catalog

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from lakeloop.movielens import MovieLens

READY_FILE = "ready.json"


@dataclass(frozen=True)
class TrainingPartition:
    """A lake holding the features of `day` built from `events` synthetic events."""

    lake: Path
    day_iso: str
    events: int
    train_rows: int
    eval_rows: int
    build_seconds: float
    reused: bool


def ready_partition(directory: Path, events: int) -> TrainingPartition | None:
    """The partition an earlier run finished building under `directory` (it wrote `ready.json`), else None; also None
    for a cache whose lake holds no features commit of its day (built before the feature tables were Delta tables):
    it is built again."""
    ready = directory / READY_FILE
    if not ready.exists():
        return None
    facts = json.loads(ready.read_text())
    try:
        read_feature_summary(directory / "lake", date.fromisoformat(facts["day"]))
    except FileNotFoundError:
        return None
    return TrainingPartition(lake=directory / "lake", day_iso=facts["day"], events=events,
                             train_rows=facts["train_rows"], eval_rows=facts["eval_rows"],
                             build_seconds=facts["build_seconds"], reused=True)


def build_cached_partition(spark: SparkSession, movielens: MovieLens, directory: Path,
                           events: int) -> TrainingPartition:
    """Build the features of a synthetic day of `events` events under `directory` (its lake in `lake/`,
    anything there before removed) by `build_partition`, then mark it ready for `ready_partition`."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    started = time.monotonic()
    summary = build_partition(spark, movielens, directory / "lake", events)
    facts = {"day": END_DAY.isoformat(), "events": events, "train_rows": summary["train_rows"],
             "eval_rows": summary["eval_rows"], "build_seconds": round(time.monotonic() - started, 1)}
    (directory / READY_FILE).write_text(json.dumps(facts, indent=2))
    return dataclasses.replace(ready_partition(directory, events), reused=False)


def build_partition(spark: SparkSession, movielens: MovieLens, lake: Path, events: int) -> dict:
    """The catalog, `events` synthetic events of `END_DAY` as its raw ratings (what ingestion would commit), the
    ETL job and the features job with the DAG's options; the summary of the day's features commit."""
    write_catalog(movielens, lake)
    write_raw_day(lake, END_DAY, raw_table(generate_events(movielens, events, END_DAY)))
    etl.run(spark, lake, END_DAY)
    features.run(spark, lake, END_DAY)
    return read_feature_summary(lake, END_DAY)
