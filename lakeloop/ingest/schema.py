"""The declared schema of a JSON topic and the reasons a record is rejected.

No pyarrow or numpy at import: the DAG and the operators read these names at parse time.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa


class FieldKind(StrEnum):
    """How a JSON value is accepted and stored."""

    ID = "id"  # JSON integer or string → string column (integers as their decimal string)
    STRING = "string"  # JSON string → string column
    NUMBER = "number"  # JSON number (not boolean) → double column
    INTEGER = "integer"  # JSON integer → int64 column
    EPOCH_MILLIS = "epoch_millis"  # JSON integer, milliseconds since the epoch → timestamp[ms, UTC] column


def arrow_type(kind: FieldKind, *, parsed: bool = False) -> pa.DataType:
    """The Arrow type of a field kind as written, or as decoded (`parsed`: event times still int64)."""
    import pyarrow as pa

    if kind is FieldKind.EPOCH_MILLIS:
        return pa.int64() if parsed else pa.timestamp("ms", tz="UTC")
    return {FieldKind.ID: pa.string(), FieldKind.STRING: pa.string(), FieldKind.NUMBER: pa.float64(),
            FieldKind.INTEGER: pa.int64()}[kind]


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
        return arrow_type(self.kind)

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
        id_field: Field whose repeated values within a slice are rejected as `duplicate`, or as
            `duplicate_conflict` when the other declared fields differ from the first occurrence's (None: no check).
        event_time_field: `EPOCH_MILLIS` field checked against the late/early-event policy (None: no check).
        max_value_bytes: Larger Kafka values are rejected as `oversize` without being parsed, and only their
            first bytes are kept past the poll that read them.
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
        import pyarrow as pa

        return pa.schema([pa.field(spec.name, spec.output_type) for spec in self.fields])

    @property
    def parsed_schema(self) -> pa.Schema:
        """The Arrow schema of decoded rows before output conversion (event times still int64)."""
        import pyarrow as pa

        return pa.schema([pa.field(spec.name, arrow_type(spec.kind, parsed=True)) for spec in self.fields])

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


class Reason(StrEnum):
    """Why a record was rejected (the `reason` column of the rejected dataset)."""

    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    WRONG_TYPE = "wrong_type"
    MISSING_FIELD = "missing_field"
    OUT_OF_RANGE = "out_of_range"
    OVERSIZE = "oversize"
    DUPLICATE = "duplicate"
    DUPLICATE_CONFLICT = "duplicate_conflict"
    TOO_LATE = "too_late"
    TOO_EARLY = "too_early"
