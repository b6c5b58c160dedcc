"""Vectorised validation of decoded rows (ranges, event-time window) and duplicate detection across a slice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lakeloop.ingest.schema import FieldKind, FieldSpec, Reason, RecordSchema


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


def _iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).isoformat()
