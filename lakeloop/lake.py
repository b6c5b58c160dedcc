"""Lake layout and atomic partition writes.

Every dataset in the lake is partitioned by day as `<lake>/<dataset>/dt=YYYY-MM-DD/`. A partition is
written into a hidden sibling directory and swapped in by rename, so readers see the previous complete
partition, or none, but never a half-written one.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

PREDICTIONS = "predictions"

def partition_path(lake: Path, dataset: str, day: date) -> Path:
    """The directory of one day's partition of `dataset` (e.g. `raw/ratings`)."""
    return lake / dataset / f"dt={day.isoformat()}"


def window_days(day: date, days: int) -> list[date]:
    """The `days` days ending on `day`, oldest first (a training or scoring window)."""
    return [day - timedelta(days=offset) for offset in range(days - 1, -1, -1)]


def swap_in(staged: Path, final: Path) -> None:
    """Replace `final` with the fully written directory `staged`, removing the previous version."""
    final.parent.mkdir(parents=True, exist_ok=True)
    retired = final.parent / f".retired-{final.name}-{uuid.uuid4().hex[:8]}"
    if final.exists():
        final.rename(retired)
    staged.rename(final)
    shutil.rmtree(retired, ignore_errors=True)


def staging_path(final: Path) -> Path:
    """A fresh hidden directory beside `final`, ignored by readers of the dataset."""
    return final.parent / f".staging-{final.name}-{uuid.uuid4().hex[:8]}"


@contextmanager
def atomic_partition(final: Path) -> Iterator[Path]:
    """Yield a staging directory; on success swap it in as `final`, on error discard it."""
    staged = staging_path(final)
    staged.mkdir(parents=True)
    try:
        yield staged
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    swap_in(staged, final)


def clean_stale_staging(dataset_dir: Path) -> None:
    """Remove staging/retired leftovers of killed writers under a dataset directory."""
    if not dataset_dir.exists():
        return
    for leftover in dataset_dir.glob(".staging-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in dataset_dir.glob(".retired-*"):
        shutil.rmtree(leftover, ignore_errors=True)
