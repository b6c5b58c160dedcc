"""Atomic partition writes: readers see the old complete partition or the new one, never a half."""

from __future__ import annotations

from datetime import date

import pytest

from lakeloop.lake import atomic_partition, clean_stale_staging, partition_path, window_days


def test_partition_path_names_the_day(lake):
    assert partition_path(lake, "raw/ratings", date(2026, 11, 20)) == lake / "raw/ratings/dt=2026-11-20"


def test_window_days_end_on_the_day():
    assert window_days(date(2026, 3, 1), 3) == [date(2026, 2, 27), date(2026, 2, 28), date(2026, 3, 1)]


def test_a_successful_write_replaces_the_previous_partition(lake):
    final = partition_path(lake, "raw/ratings", date(2026, 11, 20))
    with atomic_partition(final) as staged:
        (staged / "part-0").write_text("old")
    with atomic_partition(final) as staged:
        (staged / "part-0").write_text("new")
        assert (final / "part-0").read_text() == "old"
    assert (final / "part-0").read_text() == "new"
    assert sorted(p.name for p in final.parent.iterdir()) == ["dt=2026-11-20"]


def test_a_failed_write_leaves_the_previous_partition_untouched(lake):
    final = partition_path(lake, "raw/ratings", date(2026, 11, 20))
    with atomic_partition(final) as staged:
        (staged / "part-0").write_text("complete")
    with pytest.raises(RuntimeError), atomic_partition(final) as staged:
        (staged / "part-0").write_text("half")
        raise RuntimeError("killed mid-write")
    assert (final / "part-0").read_text() == "complete"
    assert sorted(p.name for p in final.parent.iterdir()) == ["dt=2026-11-20"]


def test_leftovers_of_killed_writers_are_cleaned(lake):
    dataset = lake / "raw/ratings"
    (dataset / ".staging-dt=2026-11-20-abcd").mkdir(parents=True)
    (dataset / "dt=2026-11-19").mkdir()
    clean_stale_staging(dataset)
    assert [p.name for p in dataset.iterdir()] == ["dt=2026-11-19"]
