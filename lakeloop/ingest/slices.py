"""The offsets of each Kafka partition that belong to a data interval, and the consumer that reads them.
"""

from __future__ import annotations

import logging
import operator
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from lakeloop.ingest.errors import KafkaSliceError, KafkaUnavailableError
from lakeloop.ingest.kafka_config import normalize_client_options
from lakeloop.ingest.options import IngestOptions

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
        # A poll returns the whole fetch (a fetch holds fewer records than bytes). One that leaves part of it for
        # the next poll delays the next fetch: 4.5-4.9 s instead of 3.6 s to read 500,000 ratings in chunks of
        # 20,000. `ChunkBuffer` makes the chunks.
        "max_poll_records": options.fetch_max_partition_bytes,
        "max_partition_fetch_bytes": options.fetch_max_partition_bytes,
        "fetch_max_bytes": options.fetch_max_partition_bytes,  # one partition is assigned at a time
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
        at_start = consumer.offsets_for_times({tp: epoch_ms(start) for tp in tps}, timeout_ms=timeout)
        at_end = consumer.offsets_for_times({tp: epoch_ms(end) for tp in tps}, timeout_ms=timeout)
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


def commit_progress(consumer: Any, topic: str, slices: list[PartitionSlice], options: IngestOptions) -> None:
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


def _address(bootstrap_servers: Any) -> str:
    if isinstance(bootstrap_servers, str):
        return bootstrap_servers
    return ",".join(bootstrap_servers or ["<no bootstrap_servers>"])


def offset_of(record: Any) -> int:
    return record.offset


value_size = operator.attrgetter("serialized_value_size")
"""A kafka-python record's value size in Kafka (-1 for a null value), even after its value was cut."""


def as_utc(moment: datetime) -> datetime:
    """A plain `datetime` in UTC (naive means UTC; pendulum's subclass is converted back to the stdlib one)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return datetime.combine(moment.date(), moment.time(), tzinfo=UTC)


def epoch_ms(moment: datetime) -> int:
    return (as_utc(moment) - _EPOCH) // timedelta(milliseconds=1)
