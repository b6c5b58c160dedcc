"""Kafka → lake ingestion of one data interval: exact, idempotent, atomic, streaming, loses nothing.

`ingest_interval` reads the records of a topic that belong to a data interval [start, end) and writes
them as one day partition `<lake>/<dataset>/dt=<start date>/` (Parquet + `_manifest.json`); every record
that cannot be written goes, with its raw bytes and a reason, to `<lake>/<rejected_dataset>/dt=.../`.
Pure kafka-python + pyarrow, no Airflow: `operators.kafka_to_lake.KafkaToLakeOperator` wraps it.

**Which records belong to an interval (the slice).** Per partition, the slice is the offset range
[first offset with record timestamp ≥ start, first offset with record timestamp ≥ end), looked up with
`offsets_for_times` and read with manual `assign` + `seek` + bounded `poll` (no consumer-group join, so
reruns and parallel backfills never fight over a group). Because that lookup is monotonic in time, the
slices of consecutive intervals tile each partition's log exactly: every record belongs to exactly one
interval, even when producers stamp records out of order. A backfill of an old day reads that day's
slice, never "whatever is new". Rerunning an interval whose end is still in the future, or before any
later record exists, may see more records later (the manifest records the offsets that were read).

**Late and early events (policy).** The record (Kafka) timestamp decides the interval; the event time
in the payload (`ts` for ratings) is kept as a column and never moves a record to another partition. A
record whose event time lies before the interval start (a late event, e.g. a phone that was offline) is
kept in the interval it *arrived* in, as long as it is at most `allowed_lateness` (default 3 days) before
the start; older ones are rejected as `too_late`. A record whose event time lies at or after the interval
end (an early event: producer clock skew) is kept if it is less than `allowed_earliness` (default 1 hour)
past the end; later ones are rejected as `too_early`. Downstream jobs that need event-time windows
filter on `ts`.

**Idempotent and atomic.** Data and rejects are staged and committed by the lake
(`lakeloop.lake.Lake.staged_partition`: rename on local disk, a manifest PUT on S3 and other object stores):
readers see the previous complete partition or none, never a partial one, even if the process is killed.
Records are decoded in fixed-size chunks and written in fixed-size row groups, one file per Kafka
partition, so a rerun over the same slice produces byte-identical files.

**Nothing lost, nothing fatal.** Every record is either written or rejected with one reason:
`invalid_utf8`, `invalid_json`, `wrong_type` (also: value is not a JSON object), `missing_field` (absent,
null or empty string), `out_of_range`, `oversize`, `too_late`, `too_early`, or `duplicate` (an id already
written from this slice; the first occurrence in partition/offset order wins). Counts reconcile:
read = written + rejected. Only infrastructure errors fail the run (`KafkaUnavailableError`,
`KafkaSliceError`, `LakeWriteError`), plus a rejection rate above `max_rejected_fraction` (default 5%,
`RejectionRateExceeded`): that means an upstream schema change, so the rejects are published for
inspection but the data partition is left as it was.

**Fast and bounded.** No per-record Python on the hot path beyond pulling values out of kafka-python's
records: a chunk of values is newline-joined and parsed by Arrow's JSON reader, validated with Arrow
compute, deduplicated with 128-bit fingerprints in a sorted numpy index (16 bytes per written record;
collision odds below 1e-20 at a billion records), and streamed to Parquet row groups. A background thread
reads Kafka a few chunks ahead while they are decoded (`_ReadAhead`), so the decoding, mostly in C++
without the GIL, overlaps kafka-python's unpacking of the next records. Partitions are read one after the
other; apart from the duplicate index, what the ingestion holds does not grow with the slice, and a broker
that honours `max_partition_fetch_bytes` bounds what the client holds (the embedded noida-db broker does
not: it answers each fetch with everything up to the high watermark). A chunk Arrow cannot parse as a whole
(a malformed record, mixed int/string ids) is bisected; only small pieces fall back to per-record
`json.loads`, which defines the semantics.

After the partition is committed to the lake, the end offsets are committed for the group
`lakeloop-ingest` (never moving backwards) so standard lag tools show progress; correctness never
depends on them.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import json
import logging
import operator
import os
import queue
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from lakeloop.config import load_settings
from lakeloop.lake import MANIFEST_NAME, Lake, as_lake

log = logging.getLogger(__name__)

MANIFEST_FORMAT_VERSION = 1
COMMIT_GROUP_ID = "lakeloop-ingest"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --------------------------------------------------------------------------------------------------
# Errors


class IngestError(RuntimeError):
    """Base class of the errors that fail an ingestion run."""


class KafkaUnavailableError(IngestError):
    """No broker answered at the bootstrap address, after the configured retries."""


class KafkaSliceError(IngestError):
    """The broker answered but the slice could not be planned or read (missing topic, stalled fetch...)."""


class LakeWriteError(IngestError):
    """The lake could not be written (permissions, disk full, ...)."""


class RejectionRateExceeded(IngestError):
    """More records were rejected than `max_rejected_fraction` allows: likely an upstream schema change."""


# --------------------------------------------------------------------------------------------------
# Declared schema


class FieldKind(StrEnum):
    """How a JSON value is accepted and stored."""

    ID = "id"  # JSON integer or string → string column (integers as their decimal string)
    STRING = "string"  # JSON string → string column
    NUMBER = "number"  # JSON number (not boolean) → double column
    INTEGER = "integer"  # JSON integer → int64 column
    EPOCH_MILLIS = "epoch_millis"  # JSON integer, milliseconds since the epoch → timestamp[ms, UTC] column


_PARSED_TYPES = {
    FieldKind.ID: pa.string(),
    FieldKind.STRING: pa.string(),
    FieldKind.NUMBER: pa.float64(),
    FieldKind.INTEGER: pa.int64(),
    FieldKind.EPOCH_MILLIS: pa.int64(),
}
_OUTPUT_TYPES = {**_PARSED_TYPES, FieldKind.EPOCH_MILLIS: pa.timestamp("ms", tz="UTC")}


@dataclass(frozen=True)
class FieldSpec:
    """One declared field of a JSON event: its kind, whether it is required, and its allowed range."""

    name: str
    kind: FieldKind
    required: bool = True
    minimum: float | None = None
    maximum: float | None = None

    @property
    def output_type(self) -> pa.DataType:
        """The Arrow/Parquet type of the column this field is written to."""
        return _OUTPUT_TYPES[self.kind]

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description, for manifests."""
        spec: dict[str, Any] = {"name": self.name, "kind": str(self.kind), "type": str(self.output_type),
                                "required": self.required}
        if self.minimum is not None:
            spec["minimum"] = self.minimum
        if self.maximum is not None:
            spec["maximum"] = self.maximum
        return spec


@dataclass(frozen=True)
class RecordSchema:
    """The declared schema of a JSON topic; makes the ingestion reusable for any such topic.

    Args:
        name: Schema name, recorded in manifests.
        version: Bumped on every incompatible change; recorded in manifests.
        fields: The declared fields, in output column order. Undeclared JSON fields are ignored.
        id_field: Field whose repeated values within a slice are rejected as `duplicate` (None: no check).
        event_time_field: `EPOCH_MILLIS` field checked against the late/early-event policy (None: no check).
        max_value_bytes: Larger Kafka values are rejected as `oversize` without being parsed.
    """

    name: str
    version: int
    fields: tuple[FieldSpec, ...]
    id_field: str | None = None
    event_time_field: str | None = None
    max_value_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        names = [spec.name for spec in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"schema {self.name}: duplicate field names in {names}")
        if self.id_field is not None and self.field(self.id_field).kind not in (FieldKind.ID, FieldKind.STRING):
            raise ValueError(f"schema {self.name}: id_field {self.id_field!r} must be an id or string field")
        if self.event_time_field is not None and self.field(self.event_time_field).kind != FieldKind.EPOCH_MILLIS:
            raise ValueError(f"schema {self.name}: event_time_field {self.event_time_field!r} must be epoch_millis")

    def field(self, name: str) -> FieldSpec:
        """The declared field called `name`."""
        for spec in self.fields:
            if spec.name == name:
                return spec
        raise KeyError(f"schema {self.name} has no field {name!r}")

    @property
    def output_schema(self) -> pa.Schema:
        """The Arrow schema of the written Parquet files."""
        return pa.schema([pa.field(spec.name, spec.output_type) for spec in self.fields])

    @property
    def parsed_schema(self) -> pa.Schema:
        """The Arrow schema of decoded rows before output conversion (event times still int64)."""
        return pa.schema([pa.field(spec.name, _PARSED_TYPES[spec.kind]) for spec in self.fields])

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description, for manifests."""
        return {"name": self.name, "version": self.version, "fields": [spec.describe() for spec in self.fields],
                "id_field": self.id_field, "event_time_field": self.event_time_field,
                "max_value_bytes": self.max_value_bytes}


RATINGS_SCHEMA = RecordSchema(
    name="ratings",
    version=1,
    fields=(
        FieldSpec("event_id", FieldKind.STRING),
        FieldSpec("user_id", FieldKind.ID),
        FieldSpec("item_id", FieldKind.ID),
        FieldSpec("rating", FieldKind.NUMBER, minimum=0.5, maximum=5.0),
        FieldSpec("ts", FieldKind.EPOCH_MILLIS),
    ),
    id_field="event_id",
    event_time_field="ts",
    max_value_bytes=16 * 1024,
)
"""Rating events: `{"event_id", "user_id", "item_id", "rating" (0.5..5), "ts" (epoch ms)}`."""

REJECTED_SCHEMA = pa.schema([
    pa.field("topic", pa.string()),
    pa.field("partition", pa.int32()),
    pa.field("offset", pa.int64()),
    pa.field("timestamp", pa.timestamp("ms", tz="UTC")),
    pa.field("key", pa.binary()),
    pa.field("value", pa.binary()),
    pa.field("reason", pa.string()),
    pa.field("detail", pa.string()),
])
"""Columns of the rejected-records dataset: where the record was, its raw bytes, and why it was rejected."""


class Reason(StrEnum):
    """Why a record was rejected (the `reason` column of the rejected dataset)."""

    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    WRONG_TYPE = "wrong_type"
    MISSING_FIELD = "missing_field"
    OUT_OF_RANGE = "out_of_range"
    OVERSIZE = "oversize"
    DUPLICATE = "duplicate"
    TOO_LATE = "too_late"
    TOO_EARLY = "too_early"


# --------------------------------------------------------------------------------------------------
# Decoding: Kafka values → Arrow rows of the parsed schema, or per-record rejections


@dataclass
class DecodedChunk:
    """The outcome of decoding a chunk of values.

    `table` holds the decodable records in the parsed schema, in chunk order; `positions[i]` is the index
    in the chunk of `table` row i. `rejects` lists `(position, reason, detail)` for the other records.
    """

    table: pa.Table
    positions: np.ndarray
    rejects: list[tuple[int, str, str]]


_JSON_TYPE_NAMES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
                    float: "number", type(None): "null"}


class _RecordRejected(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        duplicated = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise ValueError(f"duplicate key {duplicated!r}")
    return result


class JsonChunkDecoder:
    """Decodes chunks of Kafka values (UTF-8 JSON objects) into Arrow rows of a declared schema.

    The fast path parses a whole chunk at once with Arrow's JSON reader. A chunk it cannot take as a
    whole is bisected; pieces of at most `min_fast_rows` records are decoded one by one with `json.loads`,
    whose verdicts define the semantics (the fast path only ever accepts what the slow path accepts).

    Args:
        schema: The declared schema.
        fast_path: False decodes every record with the per-record path (for tests and comparisons).
        min_fast_rows: Size below which a failing piece is decoded record by record.
    """

    def __init__(self, schema: RecordSchema, *, fast_path: bool = True, min_fast_rows: int = 64) -> None:
        self.schema = schema
        self.fast_path = fast_path
        self.min_fast_rows = min_fast_rows
        self._id_fields = [spec.name for spec in schema.fields if spec.kind == FieldKind.ID]
        # Id fields may be JSON integers or strings. First attempt: let Arrow infer them (a chunk whose ids
        # are all integers or all strings parses in one go). Second attempt, for mixed chunks: quote the
        # integer ids textually, then read them as strings.
        self._inferred_ids = pa_json.ParseOptions(
            explicit_schema=pa.schema([pa.field(spec.name, _PARSED_TYPES[spec.kind]) for spec in schema.fields
                                       if spec.kind != FieldKind.ID]),
            unexpected_field_behavior="infer")
        self._string_ids = pa_json.ParseOptions(explicit_schema=schema.parsed_schema,
                                                unexpected_field_behavior="infer")
        # A key can only follow `{` or `,` outside strings (inside, its quote would be escaped); the number
        # must be a whole JSON integer followed by `,` or `}`. `-0` is left alone: json.loads reads it as 0.
        self._quote_id_patterns = [
            rf'([{{,][ \t]*"{re.escape(name)}"[ \t]*:[ \t]*)(0|-?[1-9][0-9]*)([ \t]*[,}}])'
            for name in self._id_fields]

    def decode(self, values: Sequence[bytes | None]) -> DecodedChunk:
        """Decode a chunk; every value ends up either as a table row or as a rejection."""
        rejects: list[tuple[int, str, str]] = []
        binary = pa.array(values, pa.binary())
        candidates = self._screen(values, binary, rejects)
        tables: list[pa.Table] = []
        positions: list[np.ndarray] = []
        if candidates is None:
            self._decode_range(values, binary, np.arange(len(values), dtype=np.int64), tables, positions, rejects)
        elif len(candidates):
            self._decode_range([values[i] for i in candidates], binary.take(pa.array(candidates)), candidates,
                               tables, positions, rejects)
        if len(tables) == 1:
            table = tables[0]  # the common case: one parse of the whole chunk, columns in one piece each
        else:
            table = pa.concat_tables(tables).combine_chunks() if tables else self.schema.parsed_schema.empty_table()
        rejects.sort()
        return DecodedChunk(table=table,
                            positions=np.concatenate(positions) if positions else np.empty(0, np.int64),
                            rejects=rejects)

    def _screen(self, values: Sequence[bytes | None], binary: pa.Array,
                rejects: list[tuple[int, str, str]]) -> np.ndarray | None:
        """Reject tombstones and oversize values up front; None means every value is a candidate."""
        lengths = pc.binary_length(binary)
        longest = pc.max(lengths).as_py()
        if lengths.null_count == 0 and (longest is None or longest <= self.schema.max_value_bytes):
            return None
        too_big = pc.fill_null(pc.greater(lengths, self.schema.max_value_bytes), False)
        missing = pc.is_null(lengths).to_numpy(zero_copy_only=False)
        oversize = too_big.to_numpy(zero_copy_only=False)
        for position in np.flatnonzero(missing):
            rejects.append((int(position), Reason.INVALID_JSON, "empty value (null/tombstone record)"))
        for position in np.flatnonzero(oversize):
            rejects.append((int(position), Reason.OVERSIZE,
                            f"value of {len(values[position])} bytes > {self.schema.max_value_bytes}"))
        return np.flatnonzero(~(missing | oversize)).astype(np.int64)

    def _decode_range(self, values: Sequence[bytes], binary: pa.Array, positions: np.ndarray,
                      tables: list[pa.Table], out_positions: list[np.ndarray],
                      rejects: list[tuple[int, str, str]]) -> None:
        table = self._parse_fast(values, binary) if self.fast_path else None
        if table is not None:
            tables.append(table)
            out_positions.append(positions)
            return
        if not self.fast_path or len(values) <= self.min_fast_rows:
            self._decode_slowly(values, positions, tables, out_positions, rejects)
            return
        middle = len(values) // 2
        self._decode_range(values[:middle], binary.slice(0, middle), positions[:middle], tables, out_positions,
                           rejects)
        self._decode_range(values[middle:], binary.slice(middle), positions[middle:], tables, out_positions,
                           rejects)

    def _parse_fast(self, values: Sequence[bytes], binary: pa.Array) -> pa.Table | None:
        """Parse all values with Arrow's JSON reader, or return None if any of them needs a closer look."""
        try:
            text = binary.cast(pa.string())  # validates UTF-8
        except pa.ArrowInvalid:
            return None
        # One row per value, in order: every value must be a single line that starts with `{` and ends with
        # `}`. Then no value can merge with the next into one document (after a `}` inside an unfinished
        # object or array, JSON never allows a `{`), and a value holding several documents shows up in the
        # row count. Anything else (blank values, a byte order mark, trailing spaces) takes the slow path.
        # Checked on the joined bytes: when the only newlines are the n - 1 separators, each value is
        # braced exactly when the text starts with `{`, ends with `}` and every separator reads `}\n{`.
        joined = b"\n".join(values)
        separators = len(values) - 1
        if not (joined.startswith(b"{") and joined.endswith(b"}") and joined.count(b"\n") == separators
                and joined.count(b"}\n{") == separators) or b"\r" in joined:
            return None
        # Arrow takes a bare `Inf` as a number where json.loads refuses it: leave those to the slow path.
        if b"I" in joined and b"Inf" in joined and pc.any(
                pc.match_substring_regex(text, r"[:,\[][ \t]*-?Inf([^i]|$)")).as_py():
            return None
        table = self._read_lines(joined, len(values), self._inferred_ids)
        if table is None and self._id_fields:
            for pattern in self._quote_id_patterns:
                text = pc.replace_substring_regex(text, pattern, r'\1"\2"\3')
            table = self._read_lines(_newline_joined(text), len(values), self._string_ids)
        return table

    def _read_lines(self, lines: bytes | pa.Buffer, count: int, options: pa_json.ParseOptions) -> pa.Table | None:
        read_options = pa_json.ReadOptions(use_threads=False, block_size=max(len(lines) + 1, 1 << 16))
        try:
            table = pa_json.read_json(pa.BufferReader(lines), read_options=read_options, parse_options=options)
        except pa.ArrowInvalid:
            return None
        if table.num_rows != count:
            return None
        columns = []
        for spec in self.schema.fields:
            parsed_type = _PARSED_TYPES[spec.kind]
            if spec.name not in table.column_names:
                columns.append(pa.nulls(table.num_rows, parsed_type))
                continue
            column = table.column(spec.name)
            column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
            if column.type == parsed_type:
                columns.append(column)
            elif spec.kind == FieldKind.ID and (pa.types.is_int64(column.type) or pa.types.is_null(column.type)):
                columns.append(column.cast(pa.string()))
            else:  # e.g. an id inferred as double or boolean: let the per-record path judge each value
                return None
        return pa.Table.from_arrays(columns, schema=self.schema.parsed_schema)

    def _decode_slowly(self, values: Sequence[bytes], positions: np.ndarray, tables: list[pa.Table],
                       out_positions: list[np.ndarray], rejects: list[tuple[int, str, str]]) -> None:
        rows: list[list[Any]] = []
        kept: list[int] = []
        for value, position in zip(values, positions.tolist(), strict=True):
            try:
                rows.append(self.decode_record(value))
                kept.append(position)
            except _RecordRejected as rejected:
                rejects.append((position, rejected.reason, rejected.detail))
        if rows:
            columns = list(zip(*rows, strict=True))
            tables.append(pa.Table.from_arrays(
                [pa.array(column, _PARSED_TYPES[spec.kind]) for spec, column in
                 zip(self.schema.fields, columns, strict=True)],
                schema=self.schema.parsed_schema))
            out_positions.append(np.asarray(kept, dtype=np.int64))

    def decode_record(self, value: bytes) -> list[Any]:
        """Decode one value into the parsed values of the declared fields (the reference semantics).

        Raises `_RecordRejected` with a reason for an undecodable record. Missing fields come back as None;
        their rejection, like range and event-time checks, is left to `RowValidator` so that both paths
        share it.
        """
        try:
            text = value.decode("utf-8-sig")  # a leading byte order mark is ignored, as Arrow's reader does
        except UnicodeDecodeError as error:
            raise _RecordRejected(Reason.INVALID_UTF8, str(error)) from None
        if not text.strip(" \t\r\n"):
            raise _RecordRejected(Reason.INVALID_JSON, "blank value")
        try:
            document = json.loads(text, object_pairs_hook=_no_duplicate_keys)
        except (ValueError, RecursionError) as error:
            raise _RecordRejected(Reason.INVALID_JSON, str(error)[:200]) from None
        if not isinstance(document, dict):
            raise _RecordRejected(Reason.WRONG_TYPE,
                                  f"expected a JSON object, got {_JSON_TYPE_NAMES.get(type(document), 'value')}")
        return [self._decode_field(spec, document.get(spec.name)) for spec in self.schema.fields]

    @staticmethod
    def _decode_field(spec: FieldSpec, raw: Any) -> Any:
        if raw is None:
            return None
        kind = type(raw)
        if spec.kind in (FieldKind.ID, FieldKind.STRING) and kind is str:
            try:
                raw.encode("utf-8")
            except UnicodeEncodeError:
                raise _RecordRejected(Reason.INVALID_JSON, f"{spec.name}: invalid \\u escape (lone surrogate)") \
                    from None
            return raw
        if spec.kind == FieldKind.ID and kind is int:
            return str(raw)
        if spec.kind == FieldKind.NUMBER and kind in (int, float):
            try:
                return float(raw)
            except OverflowError:
                raise _RecordRejected(Reason.OUT_OF_RANGE, f"{spec.name}: number too large") from None
        if spec.kind in (FieldKind.INTEGER, FieldKind.EPOCH_MILLIS) and kind is int:
            if not INT64_MIN <= raw <= INT64_MAX:
                raise _RecordRejected(Reason.OUT_OF_RANGE, f"{spec.name}: integer outside int64")
            return raw
        expected = {FieldKind.ID: "integer or string", FieldKind.STRING: "string", FieldKind.NUMBER: "number",
                    FieldKind.INTEGER: "integer", FieldKind.EPOCH_MILLIS: "integer (epoch ms)"}[spec.kind]
        raise _RecordRejected(Reason.WRONG_TYPE,
                              f"{spec.name}: expected {expected}, got {_JSON_TYPE_NAMES.get(kind, kind.__name__)}")


# --------------------------------------------------------------------------------------------------
# Validation of decoded rows (vectorized) and duplicate detection


@dataclass(frozen=True)
class EventTimeWindow:
    """Event times accepted for an interval: [start - allowed_lateness, end + allowed_earliness), in ms."""

    lower_ms: int
    upper_ms: int


class RowValidator:
    """Vectorized checks of decoded rows: required fields, ranges, and the late/early-event policy."""

    def __init__(self, schema: RecordSchema, window: EventTimeWindow | None) -> None:
        self.schema = schema
        self.window = window

    def rejections(self, table: pa.Table) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
        """Return (valid mask, [(row, reason, detail)]) with the first failing check per rejected row."""
        if self._passes_all(table):
            return np.ones(table.num_rows, dtype=bool), []
        rejected = np.zeros(table.num_rows, dtype=bool)
        found: list[tuple[int, str, str]] = []

        def flag(mask: pa.Array | pa.ChunkedArray, reason: Reason, detail: str) -> None:
            hits = np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool) & ~rejected
            found.extend((int(row), reason, detail) for row in np.flatnonzero(hits))
            rejected[hits] = True

        for spec in self.schema.fields:
            if not spec.required:
                continue
            column = table.column(spec.name)
            missing = pc.is_null(column)
            if spec.kind in (FieldKind.ID, FieldKind.STRING):
                missing = pc.or_(missing, pc.fill_null(pc.equal(pc.binary_length(column), 0), False))
            flag(missing, Reason.MISSING_FIELD, f"{spec.name} is missing, null or empty")
        for spec in self.schema.fields:
            if spec.minimum is None and spec.maximum is None:
                continue
            column = table.column(spec.name)
            inside = pc.is_valid(column)  # NaN compares false below, so it is out of range
            if spec.minimum is not None:
                inside = pc.and_(inside, pc.greater_equal(column, spec.minimum))
            if spec.maximum is not None:
                inside = pc.and_(inside, pc.less_equal(column, spec.maximum))
            flag(pc.and_(pc.is_valid(column), pc.invert(inside)), Reason.OUT_OF_RANGE,
                 f"{spec.name} outside [{spec.minimum}, {spec.maximum}]")
        if self.window is not None and self.schema.event_time_field is not None:
            event_time = table.column(self.schema.event_time_field)
            flag(pc.less(event_time, self.window.lower_ms), Reason.TOO_LATE,
                 f"{self.schema.event_time_field} before {_iso(self.window.lower_ms)} (allowed lateness)")
            flag(pc.greater_equal(event_time, self.window.upper_ms), Reason.TOO_EARLY,
                 f"{self.schema.event_time_field} at or after {_iso(self.window.upper_ms)} (allowed earliness)")
        return ~rejected, found

    def _passes_all(self, table: pa.Table) -> bool:
        """Whether no row fails any check, from a few whole-column aggregates (the common case).

        False only means "look row by row": nulls in a ranged optional field, for instance, send the chunk
        to the per-row checks even when they would all pass.
        """
        for spec in self.schema.fields:
            column = table.column(spec.name)
            if spec.required and column.null_count:
                return False
            if (spec.required and spec.kind in (FieldKind.ID, FieldKind.STRING)
                    and pc.index(column, "").as_py() != -1):
                return False
            limits = self._limits(spec)
            if not limits or not table.num_rows:
                continue
            if column.null_count:
                return False
            values = column.to_numpy()
            lowest, highest = values.min(), values.max()  # NaN propagates, and fails the comparisons below
            for minimum, maximum in limits:
                if not ((minimum is None or lowest >= minimum) and (maximum is None or highest <= maximum)):
                    return False
        return True

    def _limits(self, spec: FieldSpec) -> list[tuple[float | None, float | None]]:
        """The inclusive (minimum, maximum) pairs that every value of `spec` must meet."""
        limits = []
        if spec.minimum is not None or spec.maximum is not None:
            limits.append((spec.minimum, spec.maximum))
        if self.window is not None and spec.name == self.schema.event_time_field:
            limits.append((self.window.lower_ms, self.window.upper_ms - 1))
        return limits


class SeenIds:
    """Exact-enough membership of the ids already written from a slice, in bounded memory.

    Each id is reduced to a 128-bit fingerprint (two independent SipHash-2-4 keys, via pandas) held as
    two uint64 halves, in a few numpy arrays sorted by the first half and merged like an LSM tree: 16 bytes
    per id, lookups by binary search on the first half (machine integers sort and search several times
    faster than 16-byte strings), confirmed on the second. Ids sharing a first half (odds ~ n^2 / 2^65)
    sit side by side and are told apart by the second. Levels stop merging at `MERGE_LIMIT` fingerprints,
    so a merge never needs a second copy of the whole index.
    """

    _KEYS = ("lakeloop-ingest1", "lakeloop-ingest2")
    MERGE_LIMIT = 1 << 18

    def __init__(self) -> None:
        self._levels: list[tuple[np.ndarray, np.ndarray]] = []  # (high, low) halves, sorted by high

    def __len__(self) -> int:
        return sum(len(high) for high, _ in self._levels)

    def first_occurrences(self, ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Mark the ids not seen before (in earlier calls or earlier in `ids`), and remember them."""
        if len(ids) == 0:
            return np.zeros(0, dtype=bool)
        ids_high, ids_low = self._fingerprints(ids)
        order = np.argsort(ids_high, kind="stable")  # stable: among equal ids, the earliest comes first
        high, low = ids_high[order], ids_low[order]
        if ((high[1:] == high[:-1]) & (low[1:] != low[:-1])).any():  # different ids share a first half
            order = np.lexsort((ids_low, ids_high))
            high, low = ids_high[order], ids_low[order]
        distinct = np.ones(len(order), dtype=bool)
        distinct[1:] = (high[1:] != high[:-1]) | (low[1:] != low[:-1])
        order, high, low = order[distinct], high[distinct], low[distinct]
        new = ~self._contains(high, low)
        first = np.zeros(len(ids), dtype=bool)
        first[order[new]] = True
        self._add(high[new], low[new])
        return first

    @classmethod
    def _fingerprints(cls, ids: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        from pandas.util import hash_array  # pandas is heavy to import: only when ingesting

        values = ids.to_numpy(zero_copy_only=False)
        high, low = (hash_array(values, hash_key=key, categorize=False) for key in cls._KEYS)
        return high, low

    def _contains(self, high: np.ndarray, low: np.ndarray) -> np.ndarray:
        found = np.zeros(len(high), dtype=bool)
        for level_high, level_low in self._levels:
            index = np.searchsorted(level_high, high)
            same_high = level_high.take(index, mode="clip") == high
            found |= same_high & (level_low.take(index, mode="clip") == low)
            for row in np.flatnonzero(same_high & ~found):  # a first half shared by several ids: its whole run
                run_end = np.searchsorted(level_high, high[row], side="right")
                found[row] = bool((level_low[index[row]:run_end] == low[row]).any())
        return found

    def _add(self, high: np.ndarray, low: np.ndarray) -> None:
        if not len(high):
            return
        self._levels.append((high, low))
        while (len(self._levels) > 1 and len(self._levels[-2][0]) <= 2 * len(self._levels[-1][0])
               and len(self._levels[-2][0]) + len(self._levels[-1][0]) <= self.MERGE_LIMIT):
            newer, older = self._levels.pop(), self._levels.pop()
            self._levels.append(self._merged(older, newer))

    @staticmethod
    def _merged(older: tuple[np.ndarray, np.ndarray], newer: tuple[np.ndarray, np.ndarray]
                ) -> tuple[np.ndarray, np.ndarray]:
        """Two levels as one, still sorted by the first half (a linear merge, not a sort)."""
        into = np.searchsorted(older[0], newer[0], side="right") + np.arange(len(newer[0]))
        from_older = np.ones(len(older[0]) + len(newer[0]), dtype=bool)
        from_older[into] = False
        merged = []
        for old_half, new_half in zip(older, newer, strict=True):
            half = np.empty(len(from_older), dtype=np.uint64)
            half[into] = new_half
            half[from_older] = old_half
            merged.append(half)
        return merged[0], merged[1]


# --------------------------------------------------------------------------------------------------
# Streaming Parquet writing


class _RowGroupFile:
    """One Parquet file written as fixed-size row groups, opened on the first row (or at close if empty)."""

    def __init__(self, filesystem: pafs.FileSystem, path: str, schema: pa.Schema, row_group_size: int,
                 compression: str, unique_column: str | None = None) -> None:
        self.filesystem = filesystem
        self.path = path
        self.schema = schema
        self.row_group_size = row_group_size
        self.compression = compression
        # A column of unique values gains nothing from dictionary encoding and costs 3x the write time.
        self.dictionary_columns = [name for name in schema.names if name != unique_column]
        self.rows = 0
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._writer: pq.ParquetWriter | None = None

    def append(self, table: pa.Table) -> None:
        """Buffer rows; write every complete row group."""
        if table.num_rows == 0:
            return
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        if self._pending_rows >= self.row_group_size:
            buffered = pa.concat_tables(self._pending)
            whole = (buffered.num_rows // self.row_group_size) * self.row_group_size
            self._write(buffered.slice(0, whole))
            rest = buffered.slice(whole)
            self._pending = [rest] if rest.num_rows else []
            self._pending_rows = rest.num_rows

    def close(self, write_if_empty: bool = False) -> bool:
        """Write the last (partial) row group and close; return whether a file exists."""
        if self._pending_rows or (write_if_empty and self._writer is None):
            self._write(pa.concat_tables(self._pending) if self._pending else self.schema.empty_table())
        self._pending, self._pending_rows = [], 0
        if self._writer is None:
            return False
        self._writer.close()
        self._writer = None
        return True

    def _write(self, table: pa.Table) -> None:
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, self.schema, compression=self.compression,
                                            use_dictionary=self.dictionary_columns, filesystem=self.filesystem)
        # One contiguous piece per column: the encoder's pages then depend on the rows only, not on how
        # they were batched, so reruns write byte-identical files.
        self._writer.write_table(table.combine_chunks(), row_group_size=self.row_group_size)


# --------------------------------------------------------------------------------------------------
# Kafka client configuration

# Option names accepted from Airflow connection extras / the environment, and the confluent-kafka
# (librdkafka) spellings also accepted, so a connection made for the official Kafka provider works.
CLIENT_OPTIONS = frozenset({
    "bootstrap_servers", "client_id", "security_protocol", "sasl_mechanism", "sasl_plain_username",
    "sasl_plain_password", "sasl_kerberos_name", "sasl_kerberos_service_name", "sasl_kerberos_domain_name",
    "ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password", "ssl_crlfile", "ssl_check_hostname",
    "ssl_ciphers", "request_timeout_ms", "api_version", "max_partition_fetch_bytes", "fetch_max_bytes",
    "fetch_max_wait_ms", "receive_buffer_bytes", "send_buffer_bytes", "connections_max_idle_ms",
    "reconnect_backoff_ms", "reconnect_backoff_max_ms", "metadata_max_age_ms", "bootstrap_timeout_ms",
    "client_dns_lookup", "isolation_level",
})
CLIENT_OPTION_ALIASES = {
    "bootstrap.servers": "bootstrap_servers",
    "client.id": "client_id",
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.mechanisms": "sasl_mechanism",
    "sasl.username": "sasl_plain_username",
    "sasl.password": "sasl_plain_password",
    "sasl.kerberos.service.name": "sasl_kerberos_service_name",
    "ssl.ca.location": "ssl_cafile",
    "ssl.certificate.location": "ssl_certfile",
    "ssl.key.location": "ssl_keyfile",
    "ssl.key.password": "ssl_password",
    "ssl.crl.location": "ssl_crlfile",
}
ENV_CLIENT_OPTIONS = {
    "LAKELOOP_KAFKA_SECURITY_PROTOCOL": "security_protocol",
    "LAKELOOP_KAFKA_SASL_MECHANISM": "sasl_mechanism",
    "LAKELOOP_KAFKA_SASL_USERNAME": "sasl_plain_username",
    "LAKELOOP_KAFKA_SASL_PASSWORD": "sasl_plain_password",
    "LAKELOOP_KAFKA_SSL_CAFILE": "ssl_cafile",
}


def normalize_client_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Translate client options (kafka-python or librdkafka spelling) to kafka-python keyword arguments.

    Unknown names raise ValueError listing the names only, never values (they may hold secrets).
    """
    normalized: dict[str, Any] = {}
    unknown = []
    for name, value in options.items():
        key = CLIENT_OPTION_ALIASES.get(name, name)
        if key not in CLIENT_OPTIONS:
            unknown.append(name)
            continue
        normalized[key] = value
    if unknown:
        raise ValueError(f"unsupported Kafka client options {sorted(unknown)}; supported: {sorted(CLIENT_OPTIONS)} "
                         f"and the librdkafka names {sorted(CLIENT_OPTION_ALIASES)}")
    if isinstance(normalized.get("bootstrap_servers"), str):
        normalized["bootstrap_servers"] = [host.strip() for host in normalized["bootstrap_servers"].split(",")
                                           if host.strip()]
    return normalized


def client_config_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Kafka client options of the default set-up: `LAKELOOP_KAFKA_BOOTSTRAP` plus optional security.

    `LAKELOOP_KAFKA_SECURITY_PROTOCOL`, `..._SASL_MECHANISM`, `..._SASL_USERNAME`, `..._SASL_PASSWORD` and
    `..._SSL_CAFILE` pass through to kafka-python when set.
    """
    env = os.environ if environ is None else environ
    options: dict[str, Any] = {"bootstrap_servers": load_settings(dict(env)).kafka_bootstrap}
    options.update({key: env[name] for name, key in ENV_CLIENT_OPTIONS.items() if env.get(name)})
    return normalize_client_options(options)


# --------------------------------------------------------------------------------------------------
# Ingestion


@dataclass(frozen=True)
class IngestOptions:
    """Tuning and policy knobs of an ingestion run (defaults suit a daily rating topic).

    Args:
        max_rejected_fraction: Fail (after publishing the rejects) when rejected/read exceeds this.
        allowed_lateness: Event times this far before the interval start are still accepted.
        allowed_earliness: Event times less than this past the interval end are still accepted.
        chunk_size: Records per chunk read from Kafka; chunks read ahead are decoded together (the files
            written do not depend on that batching).
        row_group_size: Rows per Parquet row group.
        connect_attempts: Tries to reach the bootstrap brokers before failing.
        connect_backoff_s: Pause after the first failed try, doubled after each further one.
        bootstrap_timeout_ms: How long one try waits for a broker to answer.
        request_timeout_ms: Timeout of offset look-ups and other broker requests.
        idle_timeout_s: Fail when a partition yields no record for this long before its end offset.
        poll_timeout_ms: Longest single `poll` wait.
        progress_interval_s: Seconds between progress lines in the log.
        commit_group_id: Group whose committed offsets show progress to lag tools (None: no commit).
        compression: Parquet compression codec.
        fetch_max_partition_bytes: kafka-python `max_partition_fetch_bytes`.
        read_ahead_chunks: Chunks read from Kafka ahead of the one being decoded (a background thread).
        switch_interval_s: Interpreter thread switch interval while reading ahead (see `_ReadAhead`).
    """

    max_rejected_fraction: float = 0.05
    allowed_lateness: timedelta = timedelta(days=3)
    allowed_earliness: timedelta = timedelta(hours=1)
    chunk_size: int = 20_000
    row_group_size: int = 128 * 1024
    connect_attempts: int = 3
    connect_backoff_s: float = 2.0
    bootstrap_timeout_ms: int = 10_000
    request_timeout_ms: int = 30_000
    idle_timeout_s: float = 60.0
    poll_timeout_ms: int = 1_000
    progress_interval_s: float = 10.0
    commit_group_id: str | None = COMMIT_GROUP_ID
    compression: str = "zstd"
    fetch_max_partition_bytes: int = 4 * 1024 * 1024
    read_ahead_chunks: int = 2
    switch_interval_s: float = 0.0005


@dataclass(frozen=True)
class PartitionSlice:
    """The offsets of one Kafka partition that belong to the interval: [start_offset, end_offset)."""

    partition: int
    log_start_offset: int
    start_offset: int
    end_offset: int

    @property
    def size(self) -> int:
        """Offsets in the slice (records, unless compaction or transaction markers left gaps)."""
        return self.end_offset - self.start_offset


@dataclass
class PartitionCounts:
    """What happened to one partition's slice."""

    read: int = 0
    written: int = 0
    rejected: int = 0


@dataclass
class IngestResult:
    """The outcome of one run: counts, per-partition slices, and where the partitions were written."""

    topic: str
    day: date
    interval_start: datetime
    interval_end: datetime
    path: str
    rejected_path: str
    slices: list[PartitionSlice]
    partition_counts: dict[int, PartitionCounts]
    rejected_by_reason: dict[str, int]

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
        """The `_manifest.json` content: what was read from where, what was written, under which rules (the
        lake's commit adds the written files)."""
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
    dataset: str = "raw/ratings",
    rejected_dataset: str = "rejected/ratings",
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
        The counts and slices; the same facts are in the partition's `_manifest.json`.

    Raises:
        KafkaUnavailableError: no broker answered after `connect_attempts` tries.
        KafkaSliceError: the topic is missing or a partition stalled before its end offset.
        LakeWriteError: the lake could not be written.
        RejectionRateExceeded: too many rejects; they are published, the data partition is left as it was.
    """
    options = options or IngestOptions()
    start, end = _as_utc(interval_start), _as_utc(interval_end)
    if end <= start:
        raise ValueError(f"empty data interval [{start.isoformat()}, {end.isoformat()}): nothing to ingest; "
                         "use a timetable whose data intervals are real days")
    day = start.date()
    lake = as_lake(lake)
    final, rejected_final = lake.uri(lake.partition(dataset, day)), lake.uri(lake.partition(rejected_dataset, day))

    consumer = open_consumer(client_config, options)
    try:
        slices = plan_slices(consumer, topic, start, end, options)
        window = EventTimeWindow(lower_ms=_epoch_ms(start - options.allowed_lateness),
                                 upper_ms=_epoch_ms(end + options.allowed_earliness))
        try:
            with lake.staged_partition(dataset, day) as staged:
                with lake.staged_partition(rejected_dataset, day) as rejected_staged:
                    counts = _Run(consumer, topic, schema, window, options, lake.filesystem, staged.directory,
                                  rejected_staged.directory).read(slices)
                    result = IngestResult(topic=topic, day=day, interval_start=start, interval_end=end,
                                          path=final, rejected_path=rejected_final, slices=slices, **counts)
                    staged.manifest.update(result.manifest(schema, dataset, rejected_dataset, options))
                    rejected_staged.manifest.update(staged.manifest)
                # The rejects are published now; too many of them keep the data partition as it was.
                if result.rejected_fraction > options.max_rejected_fraction:
                    raise RejectionRateExceeded(_rejection_message(result, options))
        except OSError as error:
            raise LakeWriteError(f"cannot write the lake at {lake}: {error}") from error
        _commit_progress(consumer, topic, slices, options)
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
    """The `_manifest.json` of a day partition (counts under `"counts"`: read, written, rejected)."""
    lake = as_lake(lake)
    manifest = lake.read_manifest(dataset, day)
    if manifest is None:
        path = lake.uri(f"{lake.partition(dataset, day)}/{MANIFEST_NAME}")
        raise FileNotFoundError(f"no manifest at {path}: {dataset} has no complete partition for {day}")
    return manifest


def open_consumer(client_config: Mapping[str, Any], options: IngestOptions | None = None) -> Any:
    """A KafkaConsumer for manual assignment (no group join, no auto-commit), with bounded retries.

    Raises:
        KafkaUnavailableError: after `options.connect_attempts` failed tries, naming the address tried.
    """
    from kafka import KafkaConsumer
    from kafka.errors import KafkaConfigurationError, KafkaError

    options = options or IngestOptions()
    config = {
        "client_id": "lakeloop-ingest",
        "group_id": options.commit_group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "none",
        "isolation_level": "read_committed",
        "allow_auto_create_topics": False,
        "max_poll_records": options.chunk_size,
        "max_partition_fetch_bytes": options.fetch_max_partition_bytes,
        "bootstrap_timeout_ms": options.bootstrap_timeout_ms,
        "request_timeout_ms": options.request_timeout_ms,
        **normalize_client_options(client_config),
    }
    address = _address(config.get("bootstrap_servers"))
    started = time.monotonic()
    last_error: Exception | None = None
    for attempt in range(1, options.connect_attempts + 1):
        try:
            return KafkaConsumer(**config)
        except KafkaConfigurationError:
            raise
        except (KafkaError, OSError) as error:
            last_error = error
            log.warning("Kafka at %s not reachable (attempt %d/%d): %s", address, attempt,
                        options.connect_attempts, error)
            if attempt < options.connect_attempts:
                time.sleep(options.connect_backoff_s * 2 ** (attempt - 1))
    raise KafkaUnavailableError(
        f"Kafka broker unreachable at {address} after {options.connect_attempts} attempts "
        f"({time.monotonic() - started:.1f}s): {last_error}. Check LAKELOOP_KAFKA_BOOTSTRAP or the Airflow "
        "connection, and that the broker is up (`lakeloop services status` for the embedded one).")


def plan_slices(consumer: Any, topic: str, start: datetime, end: datetime,
                options: IngestOptions | None = None) -> list[PartitionSlice]:
    """Per partition, the offsets whose record timestamps fall in [start, end) (see the module docstring)."""
    from kafka import TopicPartition
    from kafka.errors import KafkaError

    options = options or IngestOptions()
    timeout = options.request_timeout_ms
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise KafkaSliceError(f"topic {topic!r} does not exist (or has no partitions) on "
                                  f"{_address(consumer.config['bootstrap_servers'])}")
        tps = [TopicPartition(topic, partition) for partition in sorted(partitions)]
        log_start = consumer.beginning_offsets(tps, timeout_ms=timeout)
        log_end = consumer.end_offsets(tps, timeout_ms=timeout)
        at_start = consumer.offsets_for_times({tp: _epoch_ms(start) for tp in tps}, timeout_ms=timeout)
        at_end = consumer.offsets_for_times({tp: _epoch_ms(end) for tp in tps}, timeout_ms=timeout)
    except (KafkaError, OSError) as error:
        raise KafkaSliceError(f"could not look up the offsets of {topic!r} for [{start.isoformat()}, "
                              f"{end.isoformat()}): {error}") from error
    slices = []
    for tp in tps:
        first = at_start[tp].offset if at_start.get(tp) is not None else log_end[tp]
        last = at_end[tp].offset if at_end.get(tp) is not None else log_end[tp]
        piece = PartitionSlice(tp.partition, log_start[tp], first, max(first, last))
        if piece.size and piece.start_offset == piece.log_start_offset > 0:
            log.warning("%s[%d]: the slice starts at the log start offset %d; records of %s before it may "
                        "have been deleted by retention", topic, tp.partition, piece.log_start_offset, start.date())
        slices.append(piece)
    log.info("slice of %s for [%s, %s): %s", topic, start.isoformat(), end.isoformat(),
             ", ".join(f"p{s.partition}=[{s.start_offset},{s.end_offset})" for s in slices))
    return slices


class _Run:
    """Reads planned slices partition by partition and streams them into the staged partitions."""

    def __init__(self, consumer: Any, topic: str, schema: RecordSchema, window: EventTimeWindow,
                 options: IngestOptions, filesystem: pafs.FileSystem, staged: str, rejected_staged: str) -> None:
        self.consumer = consumer
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
        """Stream every slice into its part files; Kafka is read ahead in a background thread."""
        self._total = sum(piece.size for piece in slices)
        counts = {piece.partition: PartitionCounts() for piece in slices}
        any_data = any_rejects = False
        with _ReadAhead(lambda stop: self._chunks(slices, stop), self.options.read_ahead_chunks,
                        self.options.switch_interval_s) as batches:
            for piece, piece_chunks in itertools.groupby(_joined_by_slice(batches), key=operator.itemgetter(0)):
                name = f"part-{piece.partition:05d}.parquet"
                data = _RowGroupFile(self.filesystem, f"{self.staged}/{name}", self.schema.output_schema,
                                     self.options.row_group_size, self.options.compression,
                                     unique_column=self.schema.id_field)
                rejects = _RowGroupFile(self.filesystem, f"{self.rejected_staged}/{name}", REJECTED_SCHEMA,
                                        self.options.row_group_size, self.options.compression)
                for _, records in piece_chunks:
                    self._process(piece.partition, records, data, rejects, counts[piece.partition])
                any_data |= data.close()
                any_rejects |= rejects.close()
        if not any_data:  # keep the partition readable by Spark/pyarrow even when it has no rows
            _RowGroupFile(self.filesystem, f"{self.staged}/part-00000.parquet", self.schema.output_schema, 1,
                          self.options.compression).close(write_if_empty=True)
        if not any_rejects:
            _RowGroupFile(self.filesystem, f"{self.rejected_staged}/part-00000.parquet", REJECTED_SCHEMA, 1,
                          self.options.compression).close(write_if_empty=True)
        return {"partition_counts": counts, "rejected_by_reason": dict(self.reasons)}

    def _chunks(self, slices: list[PartitionSlice], stop: threading.Event
                ) -> Generator[tuple[PartitionSlice, list], None, None]:
        """(slice, records) in partition then offset order, in chunks of exactly `chunk_size` records (the
        last of each slice may be short). Runs in the read-ahead thread, the only user of the consumer
        until it ends; returns early once `stop` is set."""
        from kafka import TopicPartition
        from kafka.errors import KafkaError

        chunk_size = self.options.chunk_size
        for piece in slices:
            if piece.size <= 0:
                continue
            tp = TopicPartition(self.topic, piece.partition)
            buffer: list[Any] = []
            try:
                self.consumer.assign([tp])
                self.consumer.seek(tp, piece.start_offset)
                last_record_at = time.monotonic()
                position = piece.start_offset
                while position < piece.end_offset and not stop.is_set():
                    records = self.consumer.poll(timeout_ms=self.options.poll_timeout_ms,
                                                 max_records=chunk_size).get(tp, [])
                    position = self.consumer.position(tp)
                    if records:
                        last_record_at = time.monotonic()
                        if records[-1].offset >= piece.end_offset:
                            records = records[:bisect.bisect_left(records, piece.end_offset, key=_offset_of)]
                        buffer.extend(records)
                        while len(buffer) >= chunk_size:
                            yield piece, buffer[:chunk_size]
                            del buffer[:chunk_size]
                        self._progress(piece, position)
                    elif time.monotonic() - last_record_at > self.options.idle_timeout_s:
                        raise KafkaSliceError(
                            f"{self.topic}[{piece.partition}]: no record for {self.options.idle_timeout_s:.0f}s "
                            f"at offset {position}, before the slice end {piece.end_offset}; is the broker still up?")
            except (KafkaError, OSError) as error:  # raised by the client only: the lake is written elsewhere
                raise KafkaSliceError(f"reading {self.topic}[{piece.partition}] at offsets "
                                      f"[{piece.start_offset}, {piece.end_offset}) failed: {error}") from error
            if buffer:
                yield piece, buffer

    def _process(self, partition: int, records: list[Any], data: _RowGroupFile, rejects: _RowGroupFile,
                 counts: PartitionCounts) -> None:
        decoded = self.decoder.decode([record.value for record in records])
        valid, invalid = self.validator.rejections(decoded.table)
        rejected = decoded.rejects + [(int(decoded.positions[row]), reason, detail) for row, reason, detail in invalid]
        all_valid = not invalid
        if self.seen is not None:
            ids = decoded.table.column(self.schema.id_field)
            valid_rows = np.flatnonzero(valid)
            first = self.seen.first_occurrences(ids if all_valid else ids.take(valid_rows))
            if not first.all():
                for row in valid_rows[~first]:
                    rejected.append((int(decoded.positions[row]), Reason.DUPLICATE,
                                     f"{self.schema.id_field} already written from this slice"))
                valid[valid_rows[~first]] = False
                all_valid = False
        kept = decoded.table if all_valid else decoded.table.filter(pa.array(valid))
        data.append(self._output(kept))
        if rejected:
            rejected.sort()
            rejects.append(self._rejected_rows(partition, records, rejected))
            self.reasons.update(str(reason) for _, reason, _ in rejected)
        counts.read += len(records)
        counts.written += kept.num_rows
        counts.rejected += len(rejected)
        self._done += len(records)

    def _output(self, table: pa.Table) -> pa.Table:
        columns = [table.column(spec.name) for spec in self.schema.fields]
        columns = [column if column.type == spec.output_type else column.cast(spec.output_type)
                   for spec, column in zip(self.schema.fields, columns, strict=True)]
        return pa.Table.from_arrays(columns, schema=self.schema.output_schema)

    def _rejected_rows(self, partition: int, records: list[Any], rejected: list[tuple[int, str, str]]) -> pa.Table:
        picked = [records[position] for position, _, _ in rejected]
        return pa.Table.from_arrays([
            pa.array([self.topic] * len(picked), pa.string()),
            pa.array([partition] * len(picked), pa.int32()),
            pa.array([record.offset for record in picked], pa.int64()),
            pa.array([record.timestamp for record in picked], pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            pa.array([record.key for record in picked], pa.binary()),
            pa.array([record.value for record in picked], pa.binary()),
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


class _ReadAhead:
    """Runs an iterator in a background thread, at most `depth` items ahead of the thread consuming it.

    Reading Kafka is pure Python (kafka-python unpacks every record), while decoding, validating and
    writing run mostly in Arrow's and numpy's C++ without the GIL; on two cores, reading the next chunks
    while the current one is decoded overlaps the two. But each return from C++ to Python waits until
    the reading thread, which never blocks, is made to yield the GIL: after `sys.getswitchinterval()`,
    5 ms by default, which a chunk's few dozen Arrow and numpy calls turn into most of its decoding
    time. So while reading ahead the interval is lowered to `switch_interval_s` (restored afterwards),
    and the consuming thread takes all the items ready (at least one) in one batch: if it falls behind,
    it catches up with fewer switches per item. An exception of the iterator is raised in the consuming
    thread at its place in the order; leaving the `with` block stops the background thread and waits for
    it (so the Kafka consumer is free again afterwards).

    Args:
        make_items: Called in the background thread with a stop event, which the iterator should check
            between blocking calls so that an early exit does not wait for them.
        depth: Items produced but not yet consumed, at most (bounds the memory held).
        switch_interval_s: The interpreter's thread switch interval while reading ahead (if lower).
    """

    _END = object()

    def __init__(self, make_items: Callable[[threading.Event], Generator[Any, None, None]], depth: int,
                 switch_interval_s: float) -> None:
        self._make_items = make_items
        self._switch_interval_s = switch_interval_s
        self._cleanup = contextlib.ExitStack()
        self._handoff: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="lakeloop-ingest-read-ahead", daemon=True)

    def __enter__(self) -> Iterator[list[Any]]:
        self._cleanup.enter_context(_short_switch_interval(self._switch_interval_s))
        self._thread.start()
        return self._consume()

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._cleanup.close()

    def _produce(self) -> None:
        items = self._make_items(self._stop)
        try:
            for item in items:
                if not self._put((item, None)):
                    return
            self._put((self._END, None))
        except BaseException as error:  # handed to the consuming thread, which raises it
            self._put((self._END, error))
        finally:
            items.close()

    def _put(self, entry: tuple[Any, BaseException | None]) -> bool:
        while not self._stop.is_set():
            try:
                self._handoff.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _consume(self) -> Iterator[list[Any]]:
        while True:
            entries = [self._handoff.get()]
            while not self._handoff.empty():
                entries.append(self._handoff.get_nowait())  # this thread is the only one taking entries
            items = [item for item, _ in entries if item is not self._END]
            if items:
                yield items
            if entries[-1][0] is self._END:
                if entries[-1][1] is not None:
                    raise entries[-1][1]
                return


_switch_interval_lock = threading.Lock()
_switch_interval_users = 0
_switch_interval_saved = 0.0


@contextlib.contextmanager
def _short_switch_interval(seconds: float) -> Iterator[None]:
    """Lower the interpreter's thread switch interval to `seconds` (if higher) while any user is inside.

    Process-wide, so counted: the first user saves the interval, the last one restores it, even when
    ingestions overlap in several threads.
    """
    global _switch_interval_users, _switch_interval_saved
    with _switch_interval_lock:
        if _switch_interval_users == 0:
            _switch_interval_saved = sys.getswitchinterval()
        _switch_interval_users += 1
        sys.setswitchinterval(min(_switch_interval_saved, seconds))
    try:
        yield
    finally:
        with _switch_interval_lock:
            _switch_interval_users -= 1
            if _switch_interval_users == 0:
                sys.setswitchinterval(_switch_interval_saved)


def _joined_by_slice(batches: Iterator[list[tuple[PartitionSlice, list]]]) -> Iterator[tuple[PartitionSlice, list]]:
    """Each batch's consecutive chunks of one slice as one list of records (in order)."""
    for batch in batches:
        for piece, chunks in itertools.groupby(batch, key=operator.itemgetter(0)):
            yield piece, list(itertools.chain.from_iterable(records for _, records in chunks))


def _commit_progress(consumer: Any, topic: str, slices: list[PartitionSlice], options: IngestOptions) -> None:
    """Commit the slice end offsets for the progress group, never moving a committed offset backwards."""
    if options.commit_group_id is None:
        return
    from kafka import TopicPartition
    from kafka.errors import KafkaError
    from kafka.structs import OffsetAndMetadata

    try:
        offsets = {}
        for piece in slices:
            tp = TopicPartition(topic, piece.partition)
            committed = consumer.committed(tp, timeout_ms=options.request_timeout_ms)
            if committed is None or committed < piece.end_offset:
                offsets[tp] = OffsetAndMetadata(piece.end_offset, "", -1)
        if offsets:
            consumer.commit(offsets, timeout_ms=options.request_timeout_ms)
    except KafkaError as error:  # visibility only: the lake partition is already committed
        log.warning("could not commit progress offsets for group %s: %s", options.commit_group_id, error)


def _newline_joined(text: pa.Array) -> pa.Buffer:
    """The values of a string array, each followed by a newline, as one contiguous buffer."""
    lines = pc.binary_join_element_wise(text, "", "\n")
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=len(lines) + 1, offset=lines.offset * 4)
    return lines.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


def _address(bootstrap_servers: Any) -> str:
    if isinstance(bootstrap_servers, str):
        return bootstrap_servers
    return ",".join(bootstrap_servers or ["<no bootstrap_servers>"])


def _offset_of(record: Any) -> int:
    return record.offset


def _as_utc(moment: datetime) -> datetime:
    """A plain `datetime` in UTC (naive means UTC; pendulum's subclass is converted back to the stdlib one)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return datetime.combine(moment.date(), moment.time(), tzinfo=UTC)


def _epoch_ms(moment: datetime) -> int:
    return (_as_utc(moment) - _EPOCH) // timedelta(milliseconds=1)


def _iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).isoformat()


__all__ = [
    "COMMIT_GROUP_ID", "RATINGS_SCHEMA", "REJECTED_SCHEMA", "DecodedChunk", "EventTimeWindow", "FieldKind",
    "FieldSpec", "IngestError", "IngestOptions", "IngestResult", "JsonChunkDecoder", "KafkaSliceError",
    "KafkaUnavailableError", "LakeWriteError", "PartitionSlice", "Reason", "RecordSchema", "RejectionRateExceeded",
    "RowValidator", "SeenIds", "client_config_from_env", "ingest_interval", "normalize_client_options",
    "open_consumer", "plan_slices", "read_manifest",
]
