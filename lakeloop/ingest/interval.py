"""Kafka → lake ingestion of one data interval: exact, idempotent, atomic, streaming, loses nothing.

See docs/ingestion.md for which records belong to an interval, the late/early-event policy and the guarantees.
"""

from __future__ import annotations

import itertools
import logging
import operator
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pyarrow import fs as pafs

from lakeloop.delta import AttemptFolder, partition_summary
from lakeloop.ingest.decode import REJECTED_SCHEMA, JsonChunkDecoder
from lakeloop.ingest.errors import LakeWriteError, RejectionRateExceeded
from lakeloop.ingest.options import IngestOptions
from lakeloop.ingest.parquet_file import RowGroupFile
from lakeloop.ingest.schema import RATINGS_SCHEMA, Reason, RecordSchema
from lakeloop.ingest.slice_reader import SliceReader
from lakeloop.ingest.slices import PartitionSlice, as_utc, commit_progress, epoch_ms, open_consumer, plan_slices
from lakeloop.ingest.validate import EventTimeWindow, RowValidator, SeenIds
from lakeloop.lake import Lake, as_lake, timed_name
from lakeloop.names import RAW_RATINGS, REJECTED_RATINGS

log = logging.getLogger(__name__)

MANIFEST_FORMAT_VERSION = 1
ATTEMPT_PREFIX = "ingest-"  # a run's folder of files inside the day's folder of each table it commits


@dataclass
class PartitionCounts:
    """What happened to one partition's slice."""

    read: int = 0
    written: int = 0
    rejected: int = 0


@dataclass
class IngestResult:
    """The outcome of one run: counts, per-partition slices, where the partitions were written, how many
    chunks were read from Kafka and the bytes of values of the largest (what `chunk_bytes` bounds), and the
    peak resident memory of the reading process (`SliceReader`)."""

    topic: str
    day: date
    interval_start: datetime
    interval_end: datetime
    path: str
    rejected_path: str
    slices: list[PartitionSlice]
    partition_counts: dict[int, PartitionCounts]
    rejected_by_reason: dict[str, int]
    chunks: int = 0
    largest_chunk_bytes: int = 0
    reader_peak_rss_bytes: int = 0

    @property
    def read(self) -> int:
        """Records read from the slice."""
        return sum(counts.read for counts in self.partition_counts.values())

    @property
    def written(self) -> int:
        """Rows written to the data partition."""
        return sum(counts.written for counts in self.partition_counts.values())

    @property
    def rejected(self) -> int:
        """Records written to the rejected partition."""
        return sum(counts.rejected for counts in self.partition_counts.values())

    @property
    def rejected_fraction(self) -> float:
        """rejected / read (0 for an empty slice)."""
        return self.rejected / self.read if self.read else 0.0

    def counts(self) -> dict[str, Any]:
        """The counts as a small JSON-ready dict (what the Airflow task returns to XCom)."""
        return {"day": self.day.isoformat(), "topic": self.topic, "read": self.read, "written": self.written,
                "rejected": self.rejected, "rejected_by_reason": dict(sorted(self.rejected_by_reason.items()))}

    def manifest(self, schema: RecordSchema, dataset: str, rejected_dataset: str,
                 options: IngestOptions) -> dict[str, Any]:
        """The summary both tables' commits of the day carry: what was read from where, what was written, under
        which rules (the Delta log names the files)."""
        counts = self.counts()
        return {
            "format_version": MANIFEST_FORMAT_VERSION,
            "dataset": dataset,
            "rejected_dataset": rejected_dataset,
            "day": counts.pop("day"),
            "topic": counts.pop("topic"),
            "interval": {"start": self.interval_start.isoformat(), "end": self.interval_end.isoformat()},
            "partitions": [
                {"partition": piece.partition, "log_start_offset": piece.log_start_offset,
                 "start_offset": piece.start_offset, "end_offset": piece.end_offset,
                 **vars(self.partition_counts[piece.partition])}
                for piece in self.slices
            ],
            "counts": counts,
            "schema": schema.describe(),
            "schema_version": schema.version,
            "policy": {
                "max_rejected_fraction": options.max_rejected_fraction,
                "allowed_lateness_s": options.allowed_lateness.total_seconds(),
                "allowed_earliness_s": options.allowed_earliness.total_seconds(),
            },
        }


def ingest_interval(
    client_config: Mapping[str, Any],
    topic: str,
    lake: Lake | Path | str,
    interval_start: datetime,
    interval_end: datetime,
    *,
    schema: RecordSchema = RATINGS_SCHEMA,
    dataset: str = RAW_RATINGS,
    rejected_dataset: str = REJECTED_RATINGS,
    options: IngestOptions | None = None,
) -> IngestResult:
    """Ingest the slice of `topic` for [interval_start, interval_end) into the day partition of the start.

    Args:
        client_config: kafka-python client options, at least `bootstrap_servers` (see
            `client_config_from_env` and `operators.hooks.kafka.KafkaSliceHook`).
        topic: The JSON topic to read.
        lake: The lake (`lakeloop.lake.Lake`), or its local path or URL (`file://`, `s3://`, ...).
        interval_start: Inclusive start (timezone-aware; naive means UTC). Names the partition `dt=`.
        interval_end: Exclusive end.
        schema: The declared schema of the topic's events.
        dataset: Dataset of the written rows, e.g. `raw/ratings`.
        rejected_dataset: Dataset of the rejected records, e.g. `rejected/ratings`.
        options: Policy and tuning; defaults to `IngestOptions()`.

    Returns:
        The counts and slices; the same facts are in the summary of the day's commits (`read_manifest`).

    Raises:
        KafkaUnavailableError: no broker answered after `connect_attempts` tries.
        KafkaSliceError: the topic is missing, a partition stalled before its end offset, or the reading process
            (`SliceReader`) ended without finishing.
        LakeWriteError: the lake could not be written.
        RejectionRateExceeded: too many rejects; they are published, the data partition is left as it was.
        ConcurrentWriteError: another run committed the same day of a table while this one committed it.
    """
    options = options or IngestOptions()
    start, end = as_utc(interval_start), as_utc(interval_end)
    if end <= start:
        raise ValueError(f"empty data interval [{start.isoformat()}, {end.isoformat()}): nothing to ingest; "
                         "use a timetable whose data intervals are real days")
    day = start.date()
    lake = as_lake(lake)
    final, rejected_final = lake.uri(lake.partition(dataset, day)), lake.uri(lake.partition(rejected_dataset, day))

    with SliceReader(client_config, topic, options, schema.max_value_bytes) as reader:  # starts while we plan
        consumer = open_consumer(client_config, options)
        try:
            slices = plan_slices(consumer, topic, start, end, options)
            window = EventTimeWindow(lower_ms=epoch_ms(start - options.allowed_lateness),
                                     upper_ms=epoch_ms(end + options.allowed_earliness))
            attempt = timed_name(ATTEMPT_PREFIX)
            data = AttemptFolder(lake, dataset, day, attempt)
            rejects = AttemptFolder(lake, rejected_dataset, day, attempt)
            try:
                try:
                    counts = _Run(reader, topic, schema, window, options, lake.filesystem, data.create(),
                                  rejects.create()).read(slices)
                except BaseException:
                    data.discard()
                    rejects.discard()
                    raise
                result = IngestResult(topic=topic, day=day, interval_start=start, interval_end=end,
                                      path=final, rejected_path=rejected_final, slices=slices, **counts)
                summary = result.manifest(schema, dataset, rejected_dataset, options)
                try:
                    rejects.commit(summary)
                except BaseException:
                    data.discard()
                    raise
                # The rejects are published now; too many of them keep the data partition as it was.
                if result.rejected_fraction > options.max_rejected_fraction:
                    data.discard()
                    raise RejectionRateExceeded(_rejection_message(result, options))
                data.commit(summary)
            except OSError as error:
                raise LakeWriteError(f"cannot write the lake at {lake}: {error}") from error
            commit_progress(consumer, topic, slices, options)
        finally:
            consumer.close(autocommit=False)
    log.info("ingested %s [%s, %s): read %d, written %d, rejected %d %s → %s", topic, start.isoformat(),
             end.isoformat(), result.read, result.written, result.rejected, result.rejected_by_reason or "", final)
    return result


def _rejection_message(result: IngestResult, options: IngestOptions) -> str:
    reasons = ", ".join(f"{reason}={count}" for reason, count in sorted(result.rejected_by_reason.items()))
    return (f"{result.rejected} of {result.read} records ({result.rejected_fraction:.1%}) of {result.topic} for "
            f"{result.day} were rejected, above the threshold of {options.max_rejected_fraction:.1%} "
            f"({reasons}). This usually means an upstream schema change. The data partition {result.path} was "
            f"left as it was; the rejected records, with their reasons, are in {result.rejected_path}.")


def read_manifest(lake: Lake | Path | str, dataset: str, day: date) -> dict[str, Any]:
    """The summary the day's commit of an ingested Delta table (`raw/ratings`, `rejected/ratings`) carries: what
    was read from where, counts under `"counts"` (read, written, rejected), and the commit's `table_version`."""
    lake = as_lake(lake)
    summary = partition_summary(lake, dataset, day)
    if summary is None:
        raise FileNotFoundError(f"no commit of {day} in the Delta table {lake.uri(lake.path(dataset))}: {dataset} "
                                f"has no ingested partition for {day} (ingest the day first)")
    return summary


class _Run:
    """Streams the chunks of the planned slices, read by a `SliceReader`, into the staged partitions."""

    def __init__(self, reader: SliceReader, topic: str, schema: RecordSchema, window: EventTimeWindow,
                 options: IngestOptions, filesystem: pafs.FileSystem, staged: str, rejected_staged: str) -> None:
        self.reader = reader
        self.filesystem = filesystem
        self.topic = topic
        self.schema = schema
        self.options = options
        self.staged = staged
        self.rejected_staged = rejected_staged
        self.decoder = JsonChunkDecoder(schema)
        self.validator = RowValidator(schema, window)
        self.seen = SeenIds() if schema.id_field else None
        self.reasons: Counter[str] = Counter()
        self._started = time.monotonic()
        self._last_progress = self._started
        self._done = 0
        self._total = 0

    def read(self, slices: list[PartitionSlice]) -> dict[str, Any]:
        """Stream every slice into its part files, one chunk at a time, as the reading process ships them."""
        self._total = sum(piece.size for piece in slices)
        counts = {piece.partition: PartitionCounts() for piece in slices}
        any_data = any_rejects = False
        for piece, piece_chunks in itertools.groupby(self.reader.read(slices), key=operator.itemgetter(0)):
            name = f"part-{piece.partition:05d}.parquet"
            data = RowGroupFile(self.filesystem, f"{self.staged}/{name}", self.schema.output_schema,
                                 self.options.row_group_size, self.options.compression,
                                 unique_column=self.schema.id_field)
            rejects = RowGroupFile(self.filesystem, f"{self.rejected_staged}/{name}", REJECTED_SCHEMA,
                                    self.options.row_group_size, self.options.compression)
            for _, chunk, position in piece_chunks:
                self._process(piece.partition, chunk, data, rejects, counts[piece.partition])
                self._progress(piece, position)
            any_data |= data.close()
            any_rejects |= rejects.close()
        if not any_data:  # keep the partition readable by Spark/pyarrow even when it has no rows
            RowGroupFile(self.filesystem, f"{self.staged}/part-00000.parquet", self.schema.output_schema, 1,
                          self.options.compression).close(write_if_empty=True)
        if not any_rejects:
            RowGroupFile(self.filesystem, f"{self.rejected_staged}/part-00000.parquet", REJECTED_SCHEMA, 1,
                          self.options.compression).close(write_if_empty=True)
        stats = self.reader.stats
        return {"partition_counts": counts, "rejected_by_reason": dict(self.reasons), "chunks": stats.chunks,
                "largest_chunk_bytes": stats.largest_chunk_bytes,
                "reader_peak_rss_bytes": stats.peak_rss_bytes}

    def _process(self, partition: int, chunk: pa.RecordBatch, data: RowGroupFile, rejects: RowGroupFile,
                 counts: PartitionCounts) -> None:
        decoded = self.decoder.decode(chunk.column("value"), chunk.column("value_size"))
        valid, invalid = self.validator.rejections(decoded.table)
        rejected = decoded.rejects + [(int(decoded.positions[row]), reason, detail) for row, reason, detail in invalid]
        all_valid = not invalid
        if self.seen is not None:
            id_field = self.schema.id_field
            valid_rows = np.flatnonzero(valid)
            candidates = decoded.table if all_valid else decoded.table.take(valid_rows)
            found = self.seen.occurrences(candidates.column(id_field), candidates.drop_columns([id_field]))
            if not found.first.all():
                repeats = ~found.first
                for row, conflicting in zip(valid_rows[repeats], found.conflicting[repeats], strict=True):
                    rejected.append((int(decoded.positions[row]), *self._duplicate_reason(conflicting)))
                valid[valid_rows[repeats]] = False
                all_valid = False
        kept = decoded.table if all_valid else decoded.table.filter(pa.array(valid))
        data.append(self._output(kept))
        if rejected:
            rejected.sort()
            rejects.append(self._rejected_rows(partition, chunk, rejected))
            self.reasons.update(str(reason) for _, reason, _ in rejected)
        counts.read += chunk.num_rows
        counts.written += kept.num_rows
        counts.rejected += len(rejected)
        self._done += chunk.num_rows

    def _duplicate_reason(self, conflicting: bool) -> tuple[Reason, str]:
        if conflicting:
            return (Reason.DUPLICATE_CONFLICT, f"{self.schema.id_field} already written from this slice with "
                    "different content; the first occurrence was kept")
        return Reason.DUPLICATE, f"{self.schema.id_field} already written from this slice"

    def _output(self, table: pa.Table) -> pa.Table:
        columns = [table.column(spec.name) for spec in self.schema.fields]
        columns = [column if column.type == spec.output_type else column.cast(spec.output_type)
                   for spec, column in zip(self.schema.fields, columns, strict=True)]
        return pa.Table.from_arrays(columns, schema=self.schema.output_schema)

    def _rejected_rows(self, partition: int, chunk: pa.RecordBatch, rejected: list[tuple[int, str, str]]
                       ) -> pa.Table:
        picked = chunk.take(pa.array([position for position, _, _ in rejected], pa.int64()))
        return pa.Table.from_arrays([
            pa.array([self.topic] * len(picked), pa.string()),
            pa.array([partition] * len(picked), pa.int32()),
            picked.column("offset"),
            picked.column("timestamp").cast(pa.timestamp("ms", tz="UTC")),
            picked.column("key"),
            picked.column("value"),
            pa.array([str(reason) for _, reason, _ in rejected], pa.string()),
            pa.array([detail for _, _, detail in rejected], pa.string()),
        ], schema=REJECTED_SCHEMA)

    def _progress(self, piece: PartitionSlice, position: int) -> None:
        now = time.monotonic()
        if now - self._last_progress < self.options.progress_interval_s:
            return
        self._last_progress = now
        rate = self._done / max(now - self._started, 1e-9)
        log.info("%s[%d]: offset %d of [%d, %d); %d/%d records of the slice done, %.0f records/s", self.topic,
                 piece.partition, position, piece.start_offset, piece.end_offset, self._done, self._total, rate)
