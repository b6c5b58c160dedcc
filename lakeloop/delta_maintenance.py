"""Keeping the lake's Delta tables healthy: compaction of a day's small files, then VACUUM of the files no recent
version references (the DAG `lake_maintenance`; docs/deployment.md, "Delta tables")."""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from lakeloop.config import DEFAULT_DELTA_RETENTION_HOURS, MIN_DELTA_RETENTION_HOURS
from lakeloop.delta import PARTITION_COLUMN, RETENTION_SETTING, open_table
from lakeloop.lake import ConcurrentWriteError, Lake

if TYPE_CHECKING:
    from deltalake import DeltaTable

log = logging.getLogger(__name__)


def check_retention(retention_hours: int, force_short_retention: bool = False) -> None:
    """Refuse a VACUUM retention that would delete files a reader or writer may still need: under
    MIN_DELTA_RETENTION_HOURS unless forced (and a negative one always)."""
    if retention_hours < 0:
        raise ValueError(f"a VACUUM retention is a whole number of hours >= 0, not {retention_hours}")
    if retention_hours < MIN_DELTA_RETENTION_HOURS and not force_short_retention:
        raise ValueError(
            f"a VACUUM retention of {retention_hours} hours is refused: it deletes the files of every version but "
            "the newest at once, which breaks readers of recent versions (a running query, time travel) and can "
            f"delete a writer's files before its commit. Set {RETENTION_SETTING} to {MIN_DELTA_RETENTION_HOURS} or "
            f"more (default {DEFAULT_DELTA_RETENTION_HOURS}); force it only on a table nothing reads or writes.")


def files_per_day(table: DeltaTable) -> Counter[str]:
    """How many data files the table's loaded version holds in each `dt` partition."""
    actions = pa.table(table.get_add_actions(flatten=True))
    return Counter(actions.column(f"partition.{PARTITION_COLUMN}").to_pylist()) if actions.num_rows else Counter()


def maintain_table(lake: Lake, dataset: str, retention_hours: int = DEFAULT_DELTA_RETENTION_HOURS, *,
                   force_short_retention: bool = False) -> dict[str, Any]:
    """Compact each `dt` partition of the Delta table `dataset` that holds more than one file (one commit per day,
    rows unchanged), then VACUUM the files no version of the last `retention_hours` references (those compaction
    and rewrites replaced, and files of writers killed before their commit). Return a summary: files before and
    after compaction, the days compacted, the files VACUUM deleted and the table's version after.

    A table the lake does not hold yet has nothing to maintain (`exists` False); a store that cannot answer raises.
    A write of the table committed while a day is compacted fails the compaction with ConcurrentWriteError."""
    from deltalake.exceptions import CommitFailedError

    check_retention(retention_hours, force_short_retention)
    table = open_table(lake, dataset)
    if table is None:
        log.info("%s: no Delta table in the lake yet, nothing to maintain", dataset)
        return {"table": dataset, "exists": False}
    before = files_per_day(table)
    crowded = sorted(day for day, files in before.items() if files > 1)
    log.info("%s (version %d): %d files in %d days; compacting the %d days with more than one file", dataset,
             table.version(), sum(before.values()), len(before), len(crowded))
    for day in crowded:
        table.update_incremental()  # a write committed meanwhile would fail the compaction: start from it
        try:
            metrics = table.optimize.compact(partition_filters=[(PARTITION_COLUMN, "=", day)])
        except CommitFailedError as error:
            raise ConcurrentWriteError(
                f"{dataset} was written (a day's rewrite, e.g. by batch_predict) while dt={day} was compacted, and "
                f"a compaction conflicts with any commit that lands during it ({error}); this day's compaction "
                "changed nothing. Run the maintenance again (the task retries) once the write is done.") from error
        log.info("%s dt=%s: %d files compacted into %d (version %d)", dataset, day, metrics["numFilesRemoved"],
                 metrics["numFilesAdded"], table.version())
    after = files_per_day(table)
    log.info("%s: vacuuming the files no version of the last %d hours references", dataset, retention_hours)
    removed = table.vacuum(retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False,
                           full=True)
    log.info("%s: VACUUM deleted %d files; the table is at version %d with %d files", dataset, len(removed),
             table.version(), sum(after.values()))
    return {"table": dataset, "exists": True, "files_before": sum(before.values()), "files_after": sum(after.values()),
            "days_compacted": crowded, "files_removed": len(removed), "version": table.version()}
