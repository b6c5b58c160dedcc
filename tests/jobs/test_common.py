"""Atomic partition writes shared by the Spark jobs: a write that fails midway leaves the live data as it was."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from jobs.common import utc_date, write_day_partitions, write_partition
from lakeloop.lake import partition_path

DAY = date(2026, 11, 20)


def fails_on_the_last_row(frame):
    """The same frame, but computing its last row raises inside the Spark write job."""
    return frame.withColumn("n", F.when(F.col("n") == 3, F.raise_error(F.lit("disk full"))).otherwise(F.col("n")))


def test_a_failed_partition_write_leaves_the_live_partition_and_no_leftovers(spark, lake):
    frame = spark.createDataFrame([(1,), (2,), (3,)], "n long")
    write_partition({"train": frame, "eval": frame.limit(1)}, lake, "things", DAY, {"rows": 3})

    with pytest.raises(Exception, match="disk full"):
        write_partition({"train": frame.limit(1), "eval": fails_on_the_last_row(frame)}, lake, "things", DAY,
                        {"rows": 1})

    live = partition_path(lake, "things", DAY)
    assert sorted(pq.read_table(live / "train")["n"].to_pylist()) == [1, 2, 3]
    assert json.loads((live / "_manifest.json").read_text()) == {"rows": 3}
    assert [path.name for path in (lake / "things").iterdir()] == [live.name]


def test_day_partitions_are_written_by_event_day_and_swapped_in_whole(spark, lake):
    midnight = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp() * 1000)
    events = spark.createDataFrame([(1, midnight - 1), (2, midnight), (3, midnight + 43_200_000)], "n long, ms long")
    frame = events.withColumn("ts", F.timestamp_millis("ms")).withColumn("dt", utc_date("ts")).drop("ms", "ts")
    earlier = date(2026, 11, 19)
    manifests = {earlier: {"rows": 1}, DAY: {"rows": 2}, date(2026, 11, 18): {"rows": 0}}
    written = write_day_partitions(frame, lake, "events", manifests)

    assert written == [partition_path(lake, "events", earlier), partition_path(lake, "events", DAY)]
    assert pq.read_table(written[0])["n"].to_pylist() == [1]
    assert sorted(pq.read_table(written[1])["n"].to_pylist()) == [2, 3]
    assert json.loads((written[1] / "_manifest.json").read_text()) == {"rows": 2}

    with pytest.raises(Exception, match="disk full"):
        write_day_partitions(fails_on_the_last_row(frame), lake, "events", manifests)
    assert sorted(pq.read_table(written[1])["n"].to_pylist()) == [2, 3]
    assert sorted(path.name for path in (lake / "events").iterdir()) == ["dt=2026-11-19", "dt=2026-11-20"]
