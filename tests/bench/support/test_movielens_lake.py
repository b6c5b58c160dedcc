"""MovieLens replayed into a lake for the benchmarks: the catalog and one raw Delta commit per day, each holding exactly
that day's events with the counts ingestion records (the ETL and features jobs that follow are the project's own, run
by the quality test)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pyarrow.parquet as pq

from bench.support.movielens_lake import END_DAY, replay_to_lake
from lakeloop.delta import partition_summary, read_partition
from lakeloop.ingest.schema import RATINGS_SCHEMA
from lakeloop.lake import Lake
from lakeloop.movielens import MovieLens
from lakeloop.names import MOVIES, RAW_RATINGS


def test_each_replayed_day_is_one_raw_commit_of_that_days_events(movielens, tmp_path):
    small = MovieLens(movielens.ratings.slice(0, 3000), movielens.movies)
    days = replay_to_lake(small, tmp_path, 2)

    assert days == [END_DAY - timedelta(days=1), END_DAY]
    assert pq.read_table(tmp_path / MOVIES).num_rows == movielens.movies.num_rows
    lake = Lake.from_url(str(tmp_path))
    total = 0
    for day in days:
        raw = read_partition(lake, RAW_RATINGS, day)
        assert raw.schema.names == RATINGS_SCHEMA.output_schema.names
        assert partition_summary(lake, RAW_RATINGS, day)["counts"]["written"] == raw.num_rows
        start = datetime.combine(day, datetime.min.time(), UTC)
        times = raw["ts"].to_pylist()
        assert all(start <= moment < start + timedelta(days=1) for moment in times)
        total += raw.num_rows
    assert total == 3000
    assert isinstance(days[0], date)
