"""A streaming Parquet file written in fixed-size row groups, so a rerun writes byte-identical files.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs


class RowGroupFile:
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
