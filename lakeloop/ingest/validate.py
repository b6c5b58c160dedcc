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


@dataclass(frozen=True)
class Occurrences:
    """Per row of a batch: whether its id is seen for the first time (`first`, the row to keep), and whether it
    repeats an id with other content than that id's first occurrence (`conflicting`; never a first row)."""

    first: np.ndarray
    conflicting: np.ndarray


class SeenIds:
    """Exact-enough membership of the ids already written from a slice, and their content, in bounded memory.

    Each id is reduced to a 128-bit fingerprint (two independent SipHash-2-4 keys, via pandas) held as
    two uint64 halves, in a few numpy arrays sorted by the first half and merged like an LSM tree: lookups
    by binary search on the first half (machine integers sort and search several times faster than 16-byte
    strings), confirmed on the second. Ids sharing a first half (odds ~ n^2 / 2^65) sit side by side and are
    told apart by the second. Next to each id, a 64-bit fingerprint of the row's other columns tells an exact
    repeat (a redelivery) from a conflicting one: 24 bytes per id in all. Levels stop merging at
    `MERGE_LIMIT` fingerprints, so a merge never needs a second copy of the whole index.
    """

    _KEYS = ("lakeloop-ingest1", "lakeloop-ingest2")
    _CONTENT_KEY = "lakeloop-content"
    _NULL = np.uint64(0x9E3779B97F4A7C15)  # the fingerprint of a null, whatever the column's type
    MERGE_LIMIT = 1 << 18

    def __init__(self) -> None:
        self._levels: list[tuple[np.ndarray, ...]] = []  # (high, low, content), sorted by high

    def __len__(self) -> int:
        return sum(len(level[0]) for level in self._levels)

    def occurrences(self, ids: pa.Array | pa.ChunkedArray, content: pa.Table | None = None) -> Occurrences:
        """Classify the rows of a batch against the ids seen before (in earlier calls or earlier in `ids`), and
        remember the new ones. `content` holds the rows' other columns (None: only the ids are compared)."""
        if len(ids) == 0:
            return Occurrences(np.zeros(0, dtype=bool), np.zeros(0, dtype=bool))
        ids_high, ids_low = self._fingerprints(ids)
        contents = (self._content_fingerprints(content) if content is not None and content.num_columns
                    else np.zeros(len(ids), dtype=np.uint64))
        order = np.argsort(ids_high, kind="stable")  # stable: among equal ids, the earliest comes first
        high, low = ids_high[order], ids_low[order]
        if ((high[1:] == high[:-1]) & (low[1:] != low[:-1])).any():  # different ids share a first half
            order = np.lexsort((ids_low, ids_high))
            high, low = ids_high[order], ids_low[order]
        distinct = np.ones(len(order), dtype=bool)
        distinct[1:] = (high[1:] != high[:-1]) | (low[1:] != low[:-1])
        run = np.cumsum(distinct) - 1  # per sorted row, the index of its id among the distinct ones
        sorted_contents = contents[order]
        high, low, first_contents = high[distinct], low[distinct], sorted_contents[distinct]
        seen, seen_contents = self._lookup(high, low)
        reference = np.where(seen, seen_contents, first_contents)
        first = np.zeros(len(ids), dtype=bool)
        first[order[np.flatnonzero(distinct)[~seen]]] = True
        conflicting = np.zeros(len(ids), dtype=bool)
        conflicting[order] = sorted_contents != reference[run]
        self._add(high[~seen], low[~seen], first_contents[~seen])
        return Occurrences(first, conflicting)

    @classmethod
    def _fingerprints(cls, ids: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        from pandas.util import hash_array  # pandas is heavy to import: only when ingesting

        values = ids.to_numpy(zero_copy_only=False)
        high, low = (hash_array(values, hash_key=key, categorize=False) for key in cls._KEYS)
        return high, low

    @classmethod
    def _content_fingerprints(cls, content: pa.Table) -> np.ndarray:
        """One 64-bit fingerprint per row of all the columns (a column's type never changes its values' hash)."""
        combined = np.zeros(content.num_rows, dtype=np.uint64)
        for column in content.columns:
            column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
            hashed = cls._value_hashes(pc.fill_null(column, "" if pa.types.is_string(column.type) else 0))
            if column.null_count:
                hashed[pc.is_null(column).to_numpy(zero_copy_only=False)] = cls._NULL
            combined = combined * np.uint64(1_000_003) ^ hashed  # position-dependent: ("a", "b") != ("b", "a")
        return combined

    @classmethod
    def _value_hashes(cls, column: pa.Array) -> np.ndarray:
        """A 64-bit hash of each value. Strings are hashed once per distinct value (Arrow finds those without the
        GIL): ids such as user or item ids repeat within a chunk, and every string hashed holds the GIL."""
        from pandas.util import hash_array

        if not pa.types.is_string(column.type):
            return hash_array(column.to_numpy(zero_copy_only=False), categorize=False)
        encoded = pc.dictionary_encode(column)
        distinct = hash_array(encoded.dictionary.to_numpy(zero_copy_only=False), hash_key=cls._CONTENT_KEY,
                              categorize=False)
        return distinct[encoded.indices.to_numpy()]

    def _lookup(self, high: np.ndarray, low: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which fingerprints are known, and the content fingerprint stored with each known one."""
        found = np.zeros(len(high), dtype=bool)
        contents = np.zeros(len(high), dtype=np.uint64)
        for level_high, level_low, level_contents in self._levels:
            index = np.searchsorted(level_high, high)
            same_high = level_high.take(index, mode="clip") == high
            hit = same_high & (level_low.take(index, mode="clip") == low) & ~found
            contents[hit] = level_contents[index[hit]]
            found |= hit
            for row in np.flatnonzero(same_high & ~found):  # a first half shared by several ids: its whole run
                run_end = np.searchsorted(level_high, high[row], side="right")
                matches = np.flatnonzero(level_low[index[row]:run_end] == low[row])
                if len(matches):
                    found[row] = True
                    contents[row] = level_contents[index[row] + matches[0]]
        return found, contents

    def _add(self, high: np.ndarray, low: np.ndarray, contents: np.ndarray) -> None:
        if not len(high):
            return
        self._levels.append((high, low, contents))
        while (len(self._levels) > 1 and len(self._levels[-2][0]) <= 2 * len(self._levels[-1][0])
               and len(self._levels[-2][0]) + len(self._levels[-1][0]) <= self.MERGE_LIMIT):
            newer, older = self._levels.pop(), self._levels.pop()
            self._levels.append(self._merged(older, newer))

    @staticmethod
    def _merged(older: tuple[np.ndarray, ...], newer: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        """Two levels as one, still sorted by the first half (a linear merge, not a sort)."""
        into = np.searchsorted(older[0], newer[0], side="right") + np.arange(len(newer[0]))
        from_older = np.ones(len(older[0]) + len(newer[0]), dtype=bool)
        from_older[into] = False
        merged = []
        for old_array, new_array in zip(older, newer, strict=True):
            array = np.empty(len(from_older), dtype=np.uint64)
            array[into] = new_array
            array[from_older] = old_array
            merged.append(array)
        return tuple(merged)


def _iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).isoformat()
