"""A reader of Delta tables that knows only the Delta protocol (no lakeloop or delta-rs code): what a downstream
consumer with its own Delta reader sees of the lake's tables."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq


def live_files(table: Path, day: date) -> list[Path]:
    """The data files of the day's `dt` partition in the table's newest version: the log's commits replayed in
    order, each `add` of the partition kept until a later `remove` of the same path."""
    assert not list((table / "_delta_log").glob("*.checkpoint.parquet")), "this reader replays JSON commits only"
    files: dict[str, None] = {}
    for commit in sorted((table / "_delta_log").glob("*.json")):
        for action in map(json.loads, commit.read_text().splitlines()):
            if "add" in action and action["add"]["partitionValues"] == {"dt": day.isoformat()}:
                files[action["add"]["path"]] = None
            if "remove" in action:
                files.pop(action["remove"]["path"], None)
    return [table / unquote(path) for path in files]


def read_day(table: Path, day: date) -> pa.Table | None:
    """The day's rows as the protocol defines them, or None if the table has no such day."""
    files = live_files(table, day)
    return pq.ParquetDataset([str(path) for path in files], partitioning=None).read() if files else None
