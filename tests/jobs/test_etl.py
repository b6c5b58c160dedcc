"""The ETL job on real MovieLens slices: event-date placement of late events, cross-day duplicates, the catalog
join, idempotent reruns, and each data-quality failure."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from jobs import etl
from lakeloop.data_quality import DataQualityError
from lakeloop.delta import commit_partition_files, partition_summary, read_partition
from lakeloop.ingest.schema import RATINGS_SCHEMA
from lakeloop.lake import Lake
from lakeloop.movielens import MovieLens
from lakeloop.names import CURATED_RATINGS, RAW_RATINGS
from lakeloop.replay import build_events, write_catalog

DAY1, DAY2 = date(2026, 11, 19), date(2026, 11, 20)
LATE, EARLY, RESENT, UNKNOWN = 100, 20, 50, 7


def raw_events(movielens, rows: int) -> pa.Table:
    """The first `rows` MovieLens ratings replayed over DAY1..DAY2, in the raw schema ingestion writes."""
    return build_events(MovieLens(movielens.ratings.slice(0, rows), movielens.movies), 2, DAY2).cast(
        RATINGS_SCHEMA.output_schema)


def write_raw(lake: Path, day: date, table: pa.Table, run: str = "ingest-1", committed: bool = True) -> None:
    """Write the day's raw rows as ingestion does: a Parquet file in the day's folder of the Delta table, then
    committed to its log (`committed=False`: a killed ingest's file, which no commit names)."""
    relative = f"dt={day.isoformat()}/{run}/part-00000.parquet"
    path = lake / RAW_RATINGS / relative
    path.parent.mkdir(parents=True)
    pq.write_table(table, path)
    if committed:
        commit_partition_files(Lake.from_url(str(lake)), RAW_RATINGS, day, [relative],
                               {"counts": {"read": table.num_rows, "written": table.num_rows, "rejected": 0}})


def event_days(table: pa.Table) -> pa.Array:
    return pc.cast(table["ts"], pa.date32())


def curated(lake, day: date) -> pa.Table:
    return read_partition(Lake.from_url(str(lake)), CURATED_RATINGS, day)


def curated_summary(lake, day: date) -> dict:
    """What the ETL run that wrote the day's curated partition committed with it."""
    return partition_summary(Lake.from_url(str(lake)), CURATED_RATINGS, day)


@pytest.fixture(scope="module")
def two_days(spark, movielens, tmp_path_factory):
    """DAY1 and DAY2 ingested and curated: DAY1's last events arrive late (on DAY2), DAY2's first ones early
    (on DAY1), and some DAY1 events are re-sent on DAY2 with another rating."""
    lake = tmp_path_factory.mktemp("etl-lake")
    write_catalog(movielens, lake)
    events = raw_events(movielens, 4000)
    item_ids = events["item_id"].to_pylist()
    item_ids[:UNKNOWN] = ["999999"] * UNKNOWN
    events = events.set_column(2, "item_id", pa.array(item_ids, pa.string()))
    on_day1 = pc.equal(event_days(events), pa.scalar(DAY1, pa.date32())).to_numpy(zero_copy_only=False)
    day1, day2 = events.filter(on_day1), events.filter(~on_day1)
    late, early = day1.slice(day1.num_rows - LATE), day2.slice(0, EARLY)
    resent = day1.slice(1000, RESENT)
    resent = resent.set_column(3, "rating", pc.if_else(pc.equal(resent["rating"], 5.0), 1.0, 5.0))
    write_raw(lake, DAY1, pa.concat_tables([day1.slice(0, day1.num_rows - LATE), early]))
    write_raw(lake, DAY2, pa.concat_tables([day2.slice(EARLY), late, resent]))
    # a killed ingest of DAY2 left its file of other events in the table's folder: no reader may count them
    write_raw(lake, DAY2, raw_events(movielens, 4300).slice(4000), run="ingest-killed", committed=False)
    first = etl.run(spark, lake, DAY1)
    second = etl.run(spark, lake, DAY2)
    return {"lake": lake, "day1": day1, "day2": day2, "late": late, "resent": day1.slice(1000, RESENT),
            "first": first, "second": second}


def test_late_events_are_placed_by_event_date(two_days):
    lake, first, second = two_days["lake"], two_days["first"], two_days["second"]
    assert first["partitions_written"] == {str(DAY1): two_days["day1"].num_rows - LATE}
    assert first["rows_outside_rewritten_days"] == EARLY

    assert second["partitions_written"] == {str(DAY1): two_days["day1"].num_rows, str(DAY2): two_days["day2"].num_rows}
    assert set(curated(lake, DAY1)["event_id"].to_pylist()) == set(two_days["day1"]["event_id"].to_pylist())
    assert set(curated(lake, DAY2)["event_id"].to_pylist()) == set(two_days["day2"]["event_id"].to_pylist())
    summary = curated_summary(lake, DAY1)
    assert summary["rows_by_arrival_day"] == {str(DAY1): two_days["day1"].num_rows - LATE, str(DAY2): LATE}
    assert summary["written_by_run"] == str(DAY2)


def test_a_resent_event_counts_once_and_its_first_copy_wins(two_days):
    lake, second = two_days["lake"], two_days["second"]
    both = pa.concat_tables([curated(lake, DAY1), curated(lake, DAY2)])
    assert pc.count_distinct(both["event_id"]).as_py() == both.num_rows
    assert second["duplicates_dropped"] == RESENT
    original = dict(zip(two_days["resent"]["event_id"].to_pylist(), two_days["resent"]["rating"].to_pylist(),
                        strict=True))
    kept = both.filter(pc.is_in(both["event_id"], pa.array(list(original))))
    assert dict(zip(kept["event_id"].to_pylist(), kept["rating"].to_pylist(), strict=True)) == original
    for manifest in (two_days["first"], second):
        assert manifest["rows_in"] == (manifest["rows_out"] + manifest["duplicates_dropped"]
                                       + manifest["rows_outside_rewritten_days"])


def test_unknown_items_are_kept_with_null_metadata_and_counted(two_days):
    day1 = curated(two_days["lake"], DAY1)
    unknown = day1.filter(pc.invert(day1["in_catalog"]))
    assert unknown.num_rows == UNKNOWN == two_days["second"]["rows_missing_from_catalog"]
    assert unknown["title"].null_count == UNKNOWN and unknown["year"].null_count == UNKNOWN
    assert set(pc.list_value_length(unknown["genres"]).to_pylist()) == {0}


def test_a_rerun_rewrites_the_same_partitions(spark, two_days):
    lake = two_days["lake"]
    before = {day: curated(lake, day).sort_by("event_id") for day in (DAY1, DAY2)}
    rerun = etl.run(spark, lake, DAY2)
    # Only the drift check's history differs: DAY1's partition now holds its late events.
    assert {**rerun, "rating_drift": None} == {**two_days["second"], "rating_drift": None}
    for day, table in before.items():
        assert curated(lake, day).sort_by("event_id").equals(table)


def test_an_empty_day_fails_with_its_row_count(spark, movielens, lake):
    write_catalog(movielens, lake)
    write_raw(lake, DAY2, raw_events(movielens, 10).slice(0, 0))
    with pytest.raises(DataQualityError, match=r"empty input: .*dt=2026-11-20 holds 0 rows"):
        etl.run(spark, lake, DAY2)


def test_schema_drift_fails_with_the_differences(spark, movielens, lake):
    write_catalog(movielens, lake)
    events = raw_events(movielens, 200)
    drifted = events.set_column(3, "rating", pc.cast(events["rating"], pa.string())).append_column(
        "device", pa.array(["phone"] * events.num_rows))
    write_raw(lake, DAY2, drifted)
    with pytest.raises(DataQualityError, match=r"schema drift .*unexpected columns \['device'\].*"
                                                   r"'rating': 'double -> string'"):
        etl.run(spark, lake, DAY2)


@pytest.fixture
def drifted_day(spark, movielens, lake):
    """A lake whose DAY2 holds only 1-star ratings after a curated DAY1 of MovieLens' usual spread."""
    write_catalog(movielens, lake)
    events = raw_events(movielens, 2000)
    on_day1 = pc.equal(event_days(events), pa.scalar(DAY1, pa.date32()))
    write_raw(lake, DAY1, events.filter(on_day1))
    day2 = events.filter(pc.invert(on_day1))
    write_raw(lake, DAY2, day2.set_column(3, "rating", pa.array([1.0] * day2.num_rows)))
    etl.run(spark, lake, DAY1)
    return lake


def test_a_rating_distribution_far_off_the_history_fails_unless_allowed(spark, drifted_day):
    with pytest.raises(DataQualityError, match=r"rating distribution drift: total variation distance 0\.9\d* > "
                                               r"0\.2 between the day's \d+ ratings \(mean 1\.000.*accept it: rerun "
                                               r"the day with the run param max_rating_drift >= 0\.9"):
        etl.run(spark, drifted_day, DAY2)
    manifest = etl.run(spark, drifted_day, DAY2, etl.EtlOptions(max_rating_drift=1.0))
    assert manifest["rating_drift"]["passed"] and manifest["rating_drift"]["total_variation"] > 0.9

    warned = etl.run(spark, drifted_day, DAY2, etl.EtlOptions(rating_drift_severity="warn"))
    assert (warned["rating_drift"]["passed"], warned["rating_drift"]["severity"]) == (False, "warn")
    with pytest.raises(ValueError, match="rating_drift_severity='ignore'"):
        etl.run(spark, drifted_day, DAY2, etl.EtlOptions(rating_drift_severity="ignore"))


@pytest.mark.slow
def test_the_dags_etl_task_accepts_a_drifted_day_with_a_raised_run_param(drifted_day, airflow_db):
    """`airflow tasks test` of the DAG's own spark_etl with the run param raised passes the drifted day that fails
    with the default threshold (the job-level test above), as a manual run or a backfill with that config would."""
    env = {**os.environ, "LAKELOOP_LAKE_URL": drifted_day.as_uri(),
           "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": "local[2]"}),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    accepted = subprocess.run([str(Path(sys.executable).parent / "airflow"), "tasks", "test", "daily_retrain",
                               "spark_etl", str(DAY2), "--task-params", json.dumps({"max_rating_drift": 0.99})],
                              env=env, capture_output=True, text=True, timeout=600)
    # `tasks test` exits 0 whatever the task did: its log says how the task ended
    assert "new_state=success" in accepted.stdout, accepted.stdout[-3000:] + accepted.stderr[-3000:]
    summary = curated_summary(drifted_day, DAY2)
    assert summary["run"]["rating_drift"]["max_total_variation"] == 0.99


def test_the_job_runs_unchanged_on_the_master_of_the_spark_connection(two_days, monkeypatch):
    """The DAG's way: spark-submit of jobs/etl.py by the Spark provider's hook, master from `spark_default`."""
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps({"conn_type": "spark", "host": "local[2]"}))
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    lake = two_days["lake"]
    before = {day: curated(lake, day).sort_by("event_id") for day in (DAY1, DAY2)}
    hook = SparkSubmitHook(conn_id="spark_default", name="lakeloop-etl-test")
    application = str(Path(etl.__file__))
    arguments = ["--lake", lake.as_uri(), "--day", str(DAY2)]
    command = hook._build_spark_submit_command(application)
    assert command[command.index("--master") + 1] == "local[2]"

    shutil.rmtree(lake / CURATED_RATINGS)
    SparkSubmitHook(conn_id="spark_default", name="lakeloop-etl-test", application_args=arguments).submit(application)

    summary = curated_summary(lake, DAY2)
    assert summary["run"]["rows_out"] == two_days["second"]["rows_out"]
    for day, table in before.items():
        assert curated(lake, day).sort_by("event_id").equals(table)
