"""A day as lakeloop committed it before the lake's datasets became Delta tables — an attempt's files under the day's
folder, named by the day's `_manifest.json` — for the tests of adopting such days."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lakeloop.lake import LEGACY_MANIFEST, Lake

ATTEMPT = "_attempt-20261101T000000Z-0123456789abcdef"


def write_manifest_day(lake: Lake, dataset: str, day: date, rows: pa.Table, summary: dict[str, Any]) -> None:
    """Write `rows` as the day of `dataset` committed by manifest, carrying `summary` (local disk or object store)."""
    folder = f"{lake.partition(dataset, day)}/{ATTEMPT}"
    lake.filesystem.create_dir(folder, recursive=True)
    pq.write_table(rows, f"{folder}/part-00000.parquet", filesystem=lake.filesystem)
    manifest = {**summary, "files": [{"name": f"{ATTEMPT}/part-00000.parquet", "rows": rows.num_rows}]}
    with lake.filesystem.open_output_stream(f"{lake.partition(dataset, day)}/{LEGACY_MANIFEST}") as stream:
        stream.write(json.dumps(manifest).encode())
