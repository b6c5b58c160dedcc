"""The direct Parquet path: which DataFrames qualify, how row groups are split (the driver's plan), and that the
workers read what Spark would give them (`tfspark.task.parquet_read`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from tfspark.driver.feed_plan import (
    PARQUET_DIRECT_CONF,
    DirectPathUnavailable,
    ParquetScan,
    RowGroup,
    parquet_scan,
    plan_parquet_feed,
    plan_row_groups,
    read_row_groups,
)
from tfspark.storage import resolve_uri
from tfspark.task.parquet_read import RowGroupSlice, open_parquet


def ratings_table(first: int, rows: int) -> pa.Table:
    """Ratings-like columns in the physical types Parquet writers produce (uint32 is read by Spark as long)."""
    ids = np.arange(first, first + rows)
    return pa.table(
        {
            "user_id": pa.array(ids, pa.int64()),
            "item_id": pa.array(ids % 7, pa.uint32()),
            "rating": pa.array(ids % 5 + 1.0, pa.float64()),
            "scaled": pa.array([[float(i), 0.5] for i in ids], pa.list_(pa.float32())),
            "title": pa.array([f"movie {i}" for i in ids]),
        }
    )


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two Parquet files of 50 and 25 rows in row groups of 20, once flat and once under hive partitions."""
    root = tmp_path_factory.mktemp("direct-lake")
    for directory in (root / "flat", root / "by_day" / "dt=2025-01-01", root / "by_day" / "dt=2025-01-02"):
        directory.mkdir(parents=True)
    pq.write_table(ratings_table(0, 50), root / "flat" / "part-0.parquet", row_group_size=20)
    pq.write_table(ratings_table(50, 25), root / "flat" / "part-1.parquet", row_group_size=20)
    pq.write_table(ratings_table(0, 30), root / "by_day" / "dt=2025-01-01" / "part-0.parquet")
    pq.write_table(ratings_table(30, 30), root / "by_day" / "dt=2025-01-02" / "part-0.parquet")
    return root


def test_a_projection_of_parquet_columns_qualifies(spark, lake):
    ratings = spark.read.parquet(str(lake / "flat"))
    scan = parquet_scan(ratings.select("rating", "user_id", "scaled"))
    assert scan.columns == ("rating", "user_id", "scaled")
    assert [Path(uri.removeprefix("file:")).name for uri in scan.files] == ["part-0.parquet", "part-1.parquet"]
    assert parquet_scan(ratings).columns == ("user_id", "item_id", "rating", "scaled", "title")
    partitioned = spark.read.parquet(str(lake / "by_day")).select("user_id", "rating")
    assert len(parquet_scan(partitioned).files) == 2, "partition columns not selected: every file, as is"


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda r: r.filter("rating > 2").select("user_id", "rating"), "not a plain file scan: Filter"),
        (lambda r: r.select("user_id", (F.col("rating") / 5).alias("rating")), "the projection computes"),
        (lambda r: r.select("user_id", F.col("rating").alias("label")), "the projection computes"),
        (lambda r: r.join(r.select("user_id"), "user_id").select("user_id", "rating"), "not a plain file scan"),
        (lambda r: r.limit(10), "not a plain file scan: GlobalLimit"),
        (lambda r: r.select("rating", "rating"), "duplicate column names"),
        (lambda r: r.sparkSession.createDataFrame(r.limit(3).collect()), "not a plain file scan"),
    ],
)
def test_anything_but_plain_parquet_columns_falls_back_to_spark(spark, lake, build, reason):
    with pytest.raises(DirectPathUnavailable, match=reason):
        parquet_scan(build(spark.read.parquet(str(lake / "flat"))))


def test_partition_columns_and_other_formats_fall_back(spark, lake, tmp_path):
    with pytest.raises(DirectPathUnavailable, match=r"partition column\(s\) \['dt'\]"):
        parquet_scan(spark.read.parquet(str(lake / "by_day")).select("user_id", "dt"))
    day = spark.read.parquet(str(lake / "by_day")).filter("dt = '2025-01-02'").select("user_id")
    with pytest.raises(DirectPathUnavailable, match="Filter"):
        parquet_scan(day)
    spark.read.parquet(str(lake / "flat")).select("user_id").write.json(str(tmp_path / "json"))
    with pytest.raises(DirectPathUnavailable, match="not Parquet"):
        parquet_scan(spark.read.json(str(tmp_path / "json")))


def test_the_switch_turns_the_direct_path_off(spark, lake):
    frame = spark.read.parquet(str(lake / "flat")).select("user_id", "rating")
    spark.conf.set(PARQUET_DIRECT_CONF, "false")
    try:
        with pytest.raises(DirectPathUnavailable, match=f"{PARQUET_DIRECT_CONF} is false"):
            plan_parquet_feed(frame, 2)
    finally:
        spark.conf.unset(PARQUET_DIRECT_CONF)
    assert plan_parquet_feed(frame, 2).worker_rows == [37, 38]


def test_file_uris_resolve_to_pyarrow_filesystems_and_unknown_schemes_fall_back():
    filesystem, path = resolve_uri("file:///lake/features/dt=2025-01-01/part%200.parquet")
    assert (filesystem.type_name, path) == ("local", "/lake/features/dt=2025-01-01/part 0.parquet")
    unknown = ParquetScan(("viewfs://lake/features/part-0.parquet",), ("rating",))
    with pytest.raises(DirectPathUnavailable, match="pyarrow cannot read viewfs://lake"):
        read_row_groups(unknown, pa.schema([("rating", pa.float64())]))


def test_spark_s3a_uris_are_read_from_s3_by_pyarrow(s3_lake):
    path = s3_lake.path("features", "part-0.parquet")
    pq.write_table(pa.table({"rating": [4.0, 3.5]}), path, filesystem=s3_lake.filesystem)
    uri = s3_lake.spark_uri(path)
    assert uri.startswith("s3a://")
    scan = ParquetScan((uri,), ("rating",))
    (group,) = read_row_groups(scan, pa.schema([("rating", pa.float64())]))
    assert group.num_rows == 2
    with open_parquet(uri) as parquet_file:
        assert parquet_file.read().column("rating").to_pylist() == [4.0, 3.5]


def test_row_groups_are_split_into_contiguous_shards_differing_by_one_row_at_most():
    groups = [RowGroup("a", 0, 20), RowGroup("a", 1, 0), RowGroup("a", 2, 30), RowGroup("b", 0, 25)]
    shards = plan_row_groups(groups, 3)
    assert shards == (
        (RowGroupSlice("a", 0, 0, 20), RowGroupSlice("a", 2, 0, 5)),
        (RowGroupSlice("a", 2, 5, 25),),
        (RowGroupSlice("b", 0, 0, 25),),
    )
    assert plan_row_groups(groups, 3) == shards, "deterministic"
    assert [sum(piece.length for piece in shard) for shard in plan_row_groups(groups, 4)] == [18, 19, 19, 19]
    assert plan_row_groups(groups, 1) == (
        (RowGroupSlice("a", 0, 0, 20), RowGroupSlice("a", 2, 0, 30), RowGroupSlice("b", 0, 0, 25)),
    )
    assert plan_row_groups([RowGroup("a", 0, 1)], 2) == ((), (RowGroupSlice("a", 0, 0, 1),)), "an empty worker"


def test_workers_read_exactly_the_rows_and_arrow_types_spark_would_give(spark, lake):
    frame = spark.read.parquet(str(lake / "flat")).select("scaled", "rating", "item_id", "user_id")
    plan = plan_parquet_feed(frame, 2)
    assert (plan.num_files, plan.num_row_groups, plan.worker_rows) == (2, 5, [37, 38])
    assert plan.batch_rows == int(spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch"))

    def spark_arrow_schema(batches):
        for batch in batches:
            yield pa.RecordBatch.from_pylist([{"schema": batch.schema.serialize().to_pybytes()}])

    shipped = frame.limit(1).mapInArrow(spark_arrow_schema, "schema binary").first()["schema"]
    spark_schema = pa.ipc.read_schema(pa.py_buffer(shipped))
    read = [pa.Table.from_batches(list(plan.batches(rank))) for rank in range(2)]
    for table in read:
        assert table.schema.equals(spark_schema), f"{table.schema} != {spark_schema}"
    assert [table.num_rows for table in read] == [37, 38]
    assert read[0]["user_id"].to_pylist() == list(range(37)), "a contiguous range of the files"
    rows = sorted(pa.concat_tables(read).to_pylist(), key=lambda row: row["user_id"])
    expected = sorted((row.asDict() for row in frame.collect()), key=lambda row: row["user_id"])
    assert rows == expected
