"""What the driver and the barrier tasks of a training job both read: its `RunConfig` and the file names it writes.

Shared so that neither side imports the other (see docs/tfspark.md).
"""

from __future__ import annotations

from dataclasses import dataclass

SUMMARY_FILE = "train_summary.json"
DEFAULT_CACHE_MEMORY_BYTES = 2048 * 1024 * 1024


@dataclass(frozen=True)
class RunConfig:
    """Where and how wide to train (`num_workers` None: one per executor); the trainer's own attributes say how
    (batch size, epochs...). `checkpoint_every` (steps) and `checkpoint_seconds`, when set, override the trainer's
    checkpoint interval for this run."""

    checkpoint_dir: str
    output_dir: str
    num_workers: int | None = None
    gpus_per_worker: int = 0
    checkpoint_every: int | None = None
    checkpoint_seconds: float | None = None
    cache_memory_bytes: int = DEFAULT_CACHE_MEMORY_BYTES
    log_every: int = 100
    trainer_name: str = ""
