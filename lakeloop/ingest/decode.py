"""Kafka values → Arrow rows of the parsed schema, or per-record rejections with their reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from lakeloop.ingest.schema import FieldKind, FieldSpec, Reason, RecordSchema, arrow_type

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


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
            explicit_schema=pa.schema([pa.field(spec.name, arrow_type(spec.kind, parsed=True)) for spec in schema.fields
                                       if spec.kind != FieldKind.ID]),
            unexpected_field_behavior="infer")
        self._string_ids = pa_json.ParseOptions(explicit_schema=schema.parsed_schema,
                                                unexpected_field_behavior="infer")
        # A key can only follow `{` or `,` outside strings (inside, its quote would be escaped); the number
        # must be a whole JSON integer followed by `,` or `}`. `-0` is left alone: json.loads reads it as 0.
        self._quote_id_patterns = [
            rf'([{{,][ \t]*"{re.escape(name)}"[ \t]*:[ \t]*)(0|-?[1-9][0-9]*)([ \t]*[,}}])'
            for name in self._id_fields]

    def decode(self, values: Sequence[bytes | None] | pa.Array, sizes: Sequence[int] | pa.Array | None = None
               ) -> DecodedChunk:
        """Decode a chunk; every value ends up either as a table row or as a rejection.

        `values` may be an Arrow binary array (what the reading process ships: its data buffer is already
        contiguous, so no Python object is made per value) or Python bytes. `sizes` are the values' sizes
        in Kafka when `values` holds only the head of the oversize ones (as
        `lakeloop.ingest.chunks.without_oversize_values` leaves them); by default, the values' lengths.
        """
        rejects: list[tuple[int, str, str]] = []
        binary = values if isinstance(values, pa.Array) else pa.array(values, pa.binary())
        candidates = self._screen(binary, sizes, rejects)
        tables: list[pa.Table] = []
        positions: list[np.ndarray] = []
        if candidates is None:
            self._decode_range(binary, np.arange(len(binary), dtype=np.int64), tables, positions, rejects)
        elif len(candidates):
            self._decode_range(binary.take(pa.array(candidates)), candidates, tables, positions, rejects)
        if len(tables) == 1:
            table = tables[0]  # the common case: one parse of the whole chunk, columns in one piece each
        else:
            table = pa.concat_tables(tables).combine_chunks() if tables else self.schema.parsed_schema.empty_table()
        rejects.sort()
        return DecodedChunk(table=table,
                            positions=np.concatenate(positions) if positions else np.empty(0, np.int64),
                            rejects=rejects)

    def _screen(self, binary: pa.Array, sizes: Sequence[int] | pa.Array | None,
                rejects: list[tuple[int, str, str]]) -> np.ndarray | None:
        """Reject tombstones and oversize values up front; None means every value is a candidate."""
        limit = self.schema.max_value_bytes
        kept_lengths = pc.binary_length(binary)
        if sizes is None:
            lengths = kept_lengths
        else:
            lengths = sizes.cast(pa.int64()) if isinstance(sizes, pa.Array) else pa.array(sizes, pa.int64())
        longest = pc.max(lengths).as_py()
        if binary.null_count == 0 and (longest is None or longest <= limit):
            return None
        missing = binary.is_null().to_numpy(zero_copy_only=False)
        oversize = pc.fill_null(pc.greater(lengths, limit), False).to_numpy(zero_copy_only=False) & ~missing
        for position in np.flatnonzero(missing):
            rejects.append((int(position), Reason.INVALID_JSON, "empty value (null/tombstone record)"))
        for position in np.flatnonzero(oversize):
            size, kept = lengths[position].as_py(), kept_lengths[position].as_py()
            rejects.append((int(position), Reason.OVERSIZE, f"value of {size} bytes > {limit}" + (
                f"; only its first {kept} bytes are kept" if kept < size else "")))
        return np.flatnonzero(~(missing | oversize)).astype(np.int64)

    def _decode_range(self, binary: pa.Array, positions: np.ndarray, tables: list[pa.Table],
                      out_positions: list[np.ndarray], rejects: list[tuple[int, str, str]]) -> None:
        table = self._parse_fast(binary) if self.fast_path else None
        if table is not None:
            tables.append(table)
            out_positions.append(positions)
            return
        if not self.fast_path or len(binary) <= self.min_fast_rows:
            self._decode_slowly(binary.to_pylist(), positions, tables, out_positions, rejects)
            return
        middle = len(binary) // 2
        self._decode_range(binary.slice(0, middle), positions[:middle], tables, out_positions, rejects)
        self._decode_range(binary.slice(middle), positions[middle:], tables, out_positions, rejects)

    def _parse_fast(self, binary: pa.Array) -> pa.Table | None:
        """Parse all values with Arrow's JSON reader, or return None if any of them needs a closer look."""
        try:
            text = binary.cast(pa.string())  # validates UTF-8
        except pa.ArrowInvalid:
            return None
        # One row per value, in order: every value must be a single line that starts with `{` and ends with
        # `}`. Then no value can merge with the next into one document (after a `}` inside an unfinished
        # object or array, JSON never allows a `{`), and a value holding several documents shows up in the
        # row count. Anything else (blank values, a byte order mark, trailing spaces) takes the slow path.
        # Checked on the joined bytes, each value followed by a newline: when the only newlines are those n,
        # each value is braced exactly when the text starts with `{`, ends with `}` and a newline, and the
        # n - 1 newlines between values read `}\n{`.
        lines = newline_joined(text)
        joined = lines.to_pybytes()
        count = len(binary)
        if not (joined.startswith(b"{") and joined.endswith(b"}\n") and joined.count(b"\n") == count
                and joined.count(b"}\n{") == count - 1) or b"\r" in joined:
            return None
        # Arrow takes a bare `Inf` as a number where json.loads refuses it: leave those to the slow path.
        if b"I" in joined and b"Inf" in joined and pc.any(
                pc.match_substring_regex(text, r"[:,\[][ \t]*-?Inf([^i]|$)")).as_py():
            return None
        table = self._read_lines(lines, count, self._inferred_ids)
        if table is None and self._id_fields:
            for pattern in self._quote_id_patterns:
                text = pc.replace_substring_regex(text, pattern, r'\1"\2"\3')
            table = self._read_lines(newline_joined(text), count, self._string_ids)
        return table

    def _read_lines(self, lines: pa.Buffer, count: int, options: pa_json.ParseOptions) -> pa.Table | None:
        read_options = pa_json.ReadOptions(use_threads=False, block_size=max(len(lines) + 1, 1 << 16))
        try:
            table = pa_json.read_json(pa.BufferReader(lines), read_options=read_options, parse_options=options)
        except pa.ArrowInvalid:
            return None
        if table.num_rows != count:
            return None
        columns = []
        for spec in self.schema.fields:
            parsed_type = arrow_type(spec.kind, parsed=True)
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
                [pa.array(column, arrow_type(spec.kind, parsed=True)) for spec, column in
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


def newline_joined(text: pa.Array) -> pa.Buffer:
    """The values of a string array, each followed by a newline, as one contiguous buffer."""
    lines = pc.binary_join_element_wise(text, "", "\n")
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=len(lines) + 1, offset=lines.offset * 4)
    return lines.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
