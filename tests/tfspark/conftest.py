"""Fixtures of the tfspark tests (helpers live in `tfspark_jobs`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tfspark_jobs import SubmitResult, finish_submit, start_submit


@pytest.fixture
def tfspark_submit(tmp_path: Path) -> Callable[..., SubmitResult]:
    """Run `tfspark-submit` with the given arguments to completion; the output dir is `tmp_path/<name>`."""

    def run(args: list[str], name: str = "run") -> SubmitResult:
        output_dir = tmp_path / name
        return finish_submit(start_submit(args, output_dir, tmp_path / "spark-work"), output_dir)

    return run
