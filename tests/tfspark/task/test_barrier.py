"""The barrier tasks on real Spark (local mode) and real TensorFlow, on Spark's MovieLens sample.

Each scenario is a real `tfspark-submit` application (see `tfspark_jobs`); the GPU scenario runs on
`local-cluster`, where Spark schedules GPUs, with a discovery-script stub.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tfspark_jobs import TINY_TRAINER, ConcurrentRuns
from tiny_trainer import RATINGS_FILE, write_ratings_parquet


def ratings_variance() -> float:
    """The loss of always predicting the mean rating: what training must beat."""
    ratings = np.array([float(line.split("::")[2]) for line in RATINGS_FILE.read_text().splitlines()])
    return float(ratings.var())


def gpu_stub(path: Path, addresses: list[str]) -> str:
    """A Spark GPU discovery script reporting fake GPUs (there is no GPU here)."""
    path.write_text(f"#!/bin/sh\necho '{json.dumps({'name': 'gpu', 'addresses': addresses})}'\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConcurrentRuns]:
    """The module's Spark applications, started together; each test waits for and checks its own."""
    runs = ConcurrentRuns(tmp_path_factory.mktemp("tfspark-runs"))
    tiny = ["--trainer", TINY_TRAINER]
    runs.start("one-worker", [*tiny, "--num-workers", "1"])
    runs.start("two-workers", [*tiny, "--num-workers", "2"])
    runs.start(
        "killed-worker",
        [
            *tiny, "--num-workers", "2",
            "--trainer-arg", "uneven=1",
            "--trainer-arg", "fail_at_step=30",
            "--trainer-arg", "fail_rank=1",
            "--trainer-arg", f"fail_marker={runs.path('killed-worker.marker')}",
        ],
    )  # fmt: skip
    runs.start(
        "parquet-direct",
        [
            *tiny, "--num-workers", "2",
            "--trainer-arg", f"parquet={write_ratings_parquet(runs.path('ratings-parquet'))}",
            "--trainer-arg", "fail_at_step=30",
            "--trainer-arg", "fail_rank=1",
            "--trainer-arg", f"fail_marker={runs.path('parquet-direct.marker')}",
        ],
    )  # fmt: skip
    runs.start(
        "empty-partition",
        [
            *tiny, "--num-workers", "2",
            "--trainer-arg", "limit=1",
            "--trainer-arg", f"shutdown_marker={runs.path('empty-partition.shutdown')}",
        ],
    )  # fmt: skip
    runs.start(
        "gpu-stub",
        [
            *tiny, "--num-workers", "2", "--gpus-per-worker", "1", "--trainer-arg", "epochs=1",
            "--master", "local-cluster[1,2,1024]",
            "--conf", "spark.executor.cores=2",
            "--conf", "spark.executor.resource.gpu.amount=2",
            "--conf", "spark.worker.resource.gpu.amount=2",
            "--conf", f"spark.worker.resource.gpu.discoveryScript={gpu_stub(runs.path('gpus.sh'), ['6', '7'])}",
        ],
    )  # fmt: skip
    yield runs
    runs.stop_all()


@pytest.mark.slow
def test_one_and_two_workers_train_the_same_model_to_the_same_loss(runs):
    results = {1: runs.result("one-worker"), 2: runs.result("two-workers")}
    for result in results.values():
        assert result.returncode == 0, result.log_tail()

    one, two = results[1].summary, results[2].summary
    assert (one["workers"], two["workers"]) == (1, 2)
    assert one["rows"] == two["rows"] == 1501
    assert two["worker_rows"] == [750, 751]
    assert one["global_step"] == two["global_step"] == 24 * 4, "ceil(1501 / 64) steps for each of 4 epochs"
    assert one["resumed_from_step"] is None and two["resumed_from_step"] is None
    assert two["loss"] == pytest.approx(one["loss"], rel=0.05)
    assert one["loss"] < 0.95 * ratings_variance()
    assert two["epoch_losses"][-1] < two["epoch_losses"][0]
    assert one["cuda_visible_devices"] == [""] and two["cuda_visible_devices"] == ["", ""], "CPU only"
    assert two["feed_path"] == "spark-arrow", "text parsed in pre_train: Spark feeds it"
    assert two["feed_path_reason"].startswith("the projection computes")
    for result in results.values():
        assert (result.output_dir / "model.keras").is_file()
        assert (result.output_dir / "checkpoints" / "ckpt-96.index").is_file()
        summary_line = [line for line in result.stdout.splitlines() if line.startswith("TFSPARK_SUMMARY ")]
        assert len(summary_line) == 1


@pytest.mark.slow
def test_uneven_partitions_are_rebalanced_and_a_worker_killed_mid_training_resumes_from_the_checkpoint(runs):
    result = runs.result("killed-worker")
    assert result.returncode == 0, result.log_tail()
    assert runs.path("killed-worker.marker").exists(), "rank 1 really died at step 30"
    assert "Python worker exited unexpectedly" in result.stderr
    summary = result.summary
    assert sorted(summary["worker_rows"]) == [750, 751], "partitions of 98 and 1403 rows were rebalanced"
    assert summary["global_step"] == 96
    # Rank 1 dies right after step 30's checkpoint; the chief has saved it too unless Spark killed it first.
    assert summary["resumed_from_step"] in (20, 30), "resumed from a checkpoint (every 10 steps)"


@pytest.mark.slow
def test_a_plain_parquet_scan_is_read_by_the_workers_themselves_and_a_killed_worker_resumes(runs):
    result = runs.result("parquet-direct")
    assert result.returncode == 0, result.log_tail()
    assert "feed path: parquet-direct (2 files, 6 row groups, rows per worker [750, 751])" in result.stdout
    assert runs.path("parquet-direct.marker").exists(), "rank 1 really died at step 30"
    assert "Python worker exited unexpectedly" in result.stderr
    summary = result.summary
    assert (summary["feed_path"], summary["feed_path_reason"]) == ("parquet-direct", None)
    assert summary["worker_rows"] == [750, 751]
    assert summary["global_step"] == 96
    assert summary["resumed_from_step"] in (20, 30), "resumed from a checkpoint (every 10 steps)"
    assert summary["loss"] < 0.95 * ratings_variance()


@pytest.mark.slow
def test_a_partition_without_rows_fails_every_worker_instead_of_hanging_and_shutdown_runs(runs):
    result = runs.result("empty-partition")
    assert result.returncode != 0
    assert "received no rows" in result.stderr
    assert runs.path("empty-partition.shutdown").read_text() == "shutdown called\n"
    assert not (result.output_dir / "train_summary.json").exists()


@pytest.mark.slow
def test_each_worker_sees_only_the_gpus_spark_assigned_its_task(runs):
    result = runs.result("gpu-stub")
    assert result.returncode == 0, result.log_tail()
    summary = result.summary
    assert sorted(summary["cuda_visible_devices"]) == ["6", "7"], "one fake GPU each, never both"
    assert summary["tensorflow_preloaded"] == [False, False], "set before TensorFlow was imported"
    assert summary["global_step"] == 24
