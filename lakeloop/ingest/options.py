"""The tuning and policy knobs of an ingestion run (no heavy imports: operators take them at DAG parse time).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

log = logging.getLogger(__name__)

COMMIT_GROUP_ID = "lakeloop-ingest"


@dataclass(frozen=True)
class IngestOptions:
    """Tuning and policy knobs of an ingestion run (defaults suit a daily rating topic).

    Args:
        max_rejected_fraction: Fail (after publishing the rejects) when rejected/read exceeds this.
        allowed_lateness: Event times this far before the interval start are still accepted.
        allowed_earliness: Event times less than this past the interval end are still accepted.
        chunk_size: Records per chunk read from Kafka, at most (the files written do not depend on it).
        chunk_bytes: Bytes of Kafka values per chunk, at most (a single larger value makes a chunk of its own;
            oversize values count only their kept head). With `read_ahead_chunks`, bounds the memory held:
            see `lakeloop.ingest.slice_reader.SliceReader` and docs/ingestion.md.
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
        fetch_max_partition_bytes: kafka-python `max_partition_fetch_bytes`, and `fetch_max_bytes` too (one
            partition is read at a time): what one fetch, hence one poll, returns at most (a broker still
            returns a larger record batch whole).
        read_ahead_chunks: Chunks the reading process (a child process, see `SliceReader`) may have waiting for
            the ingestion, at most; it stops polling Kafka while they wait. At least 1.
    """

    max_rejected_fraction: float = 0.05
    allowed_lateness: timedelta = timedelta(days=3)
    allowed_earliness: timedelta = timedelta(hours=1)
    chunk_size: int = 20_000
    chunk_bytes: int = 16 * 1024 * 1024
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

    def __post_init__(self) -> None:
        too_small = [f"{name}={getattr(self, name)!r}" for name in ("chunk_size", "chunk_bytes",
                                                                      "fetch_max_partition_bytes", "read_ahead_chunks")
                     if getattr(self, name) < 1]
        if too_small:
            raise ValueError(f"IngestOptions: {', '.join(too_small)} must be at least 1 (records or bytes per "
                             "chunk or fetch, chunks read ahead); leave them out for the defaults")
