"""The task side of the direct Parquet path: a worker reads its planned row group slices itself, with pyarrow,
typed and batched as Spark would have handed them over. The driver plans them (`tfspark.driver.feed_plan`);
see docs/tfspark.md.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from tfspark.storage import resolve_uri


@dataclass(frozen=True)
class RowGroupSlice:
    """Rows `[offset, offset + length)` of one row group: a worker's part of it."""

    path: str
    index: int
    offset: int
    length: int


@dataclass(frozen=True)
class ParquetFeedPlan:
    """Which rows each worker reads, and the Arrow schema and record batch size Spark would have used."""

    schema: pa.Schema
    shards: tuple[tuple[RowGroupSlice, ...], ...]
    batch_rows: int | None
    num_files: int
    num_row_groups: int

    @property
    def worker_rows(self) -> list[int]:
        """Rows planned for each worker."""
        return [sum(piece.length for piece in shard) for shard in self.shards]

    def batches(self, rank: int) -> Iterator[pa.RecordBatch]:
        """Worker `rank`'s rows as record batches of at most `batch_rows`, typed as Spark would type them."""
        for uri, pieces in itertools.groupby(self.shards[rank], key=lambda piece: piece.path):
            with open_parquet(uri) as parquet_file:
                for piece in pieces:
                    table = parquet_file.read_row_group(piece.index, columns=self.schema.names)
                    table = table.select(self.schema.names).slice(piece.offset, piece.length).cast(self.schema)
                    yield from table.to_batches(max_chunksize=self.batch_rows)


def open_parquet(uri: str) -> pq.ParquetFile:
    """Open a Parquet file by URI for reading (footer and row groups)."""
    filesystem, path = resolve_uri(uri)
    return pq.ParquetFile(path, filesystem=filesystem)
