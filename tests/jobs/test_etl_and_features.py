"""The Spark ETL and feature jobs on a real slice of MovieLens, run in a local Spark session."""

from __future__ import annotations

import json
from datetime import date

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs import etl, features
from lakeloop.lake import partition_path
from lakeloop.replay import build_events, write_catalog

DAY = date(2026, 11, 20)


def write_raw_day(movielens, lake, rows: int, unknown_items: int = 0) -> pa.Table:
    events = build_events(movielens, 1, DAY).slice(0, rows)
    item_ids = pc.cast(events["item_id"], pa.string()).to_pylist()
    item_ids[:unknown_items] = ["999999"] * unknown_items
    raw = pa.table({
        "event_id": events["event_id"],
        "user_id": pc.cast(events["user_id"], pa.string()),
        "item_id": pa.array(item_ids, pa.string()),
        "rating": events["rating"],
        "ts": pc.cast(events["ts"], pa.timestamp("ms", tz="UTC")),
    })
    path = partition_path(lake, "raw/ratings", DAY)
    path.mkdir(parents=True)
    pq.write_table(raw, path / "part-0.parquet")
    return raw


def test_etl_joins_the_catalog_and_keeps_every_row(spark, movielens, lake):
    write_catalog(movielens, lake)
    write_raw_day(movielens, lake, rows=3000, unknown_items=7)
    manifest = etl.run(spark, lake, DAY)
    assert manifest == {"day": "2026-11-20", "rows_in": 3000, "rows_out": 3000, "rows_missing_from_catalog": 7}
    curated = pq.read_table(partition_path(lake, "curated/ratings", DAY))
    assert curated.num_rows == 3000
    assert pc.sum(pc.invert(curated["in_catalog"])).as_py() == 7
    on_disk = json.loads((partition_path(lake, "curated/ratings", DAY) / "_manifest.json").read_text())
    assert on_disk == manifest


def test_features_are_stable_and_split_about_ten_percent(spark, movielens, lake):
    write_catalog(movielens, lake)
    write_raw_day(movielens, lake, rows=5000)
    etl.run(spark, lake, DAY)
    first = features.run(spark, lake, DAY)
    table = pq.read_table(partition_path(lake, "features/ratings", DAY)).sort_by("event_id")
    assert first["rows_in"] == first["rows_out"] == 5000
    assert 0.07 < first["test"] / 5000 < 0.13
    assert table.schema.field("genres").type == pa.list_(pa.float32())
    assert set(pc.list_value_length(table["genres"]).unique().to_pylist()) == {len(features.GENRES)}
    assert pc.max(table["user_idx"]).as_py() < features.USER_BUCKETS
    assert pc.min(table["year_idx"]).as_py() >= 0 and pc.max(table["year_idx"]).as_py() < features.YEAR_BUCKETS

    second = features.run(spark, lake, DAY)
    assert second == first
    rerun = pq.read_table(partition_path(lake, "features/ratings", DAY)).sort_by("event_id")
    assert rerun.equals(table)
