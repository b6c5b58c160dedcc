"""Errors that fail an ingestion run: infrastructure failures and a rejection rate above the limit.
"""

from __future__ import annotations


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
