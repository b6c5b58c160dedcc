"""A DAG run's directory name: the run id as one path segment."""

from __future__ import annotations

import re

import pytest

from lakeloop.names import run_directory_name


def test_a_runs_checkpoint_directory_is_named_after_its_run_id_without_colons():
    assert run_directory_name("scheduled__2026-11-21T00:00:00+00:00") == "scheduled__2026-11-21T00_00_00+00_00"
    assert run_directory_name("manual__nightly.v2") == "manual__nightly.v2"


@pytest.mark.parametrize("run_id", ["", ".", "..", "../../models", "a/b", "a\\b"])
def test_a_run_id_that_is_not_one_path_segment_is_refused(run_id):
    with pytest.raises(ValueError, match=re.escape(f"run id {run_id!r} cannot name this run's checkpoint directory")):
        run_directory_name(run_id)
