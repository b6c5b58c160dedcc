"""Keras `model.fit` as a tfspark trainer (`keras_fit = True`): real Spark (local mode), real TensorFlow and tf-keras,
the tiny trainer's MovieLens sample, one `tfspark-submit` application per scenario (see `tfspark_jobs`)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tfspark_jobs import ConcurrentRuns

KERAS_TRAINER = "tiny_keras_trainer:TinyKerasTrainer"
STEPS_PER_EPOCH = 24  # ceil(1501 rows / global batch 64)


def epoch_log(directory: Path, rank: int) -> list[list[str]]:
    """What `EpochLog` wrote on worker `rank`: one list per fit started, of `<epoch> <loss> <examples>` lines."""
    fits: list[list[str]] = []
    for line in (directory / f"rank-{rank}.log").read_text().splitlines():
        if line == "start":
            fits.append([])
        else:
            fits[-1].append(line)
    return fits


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConcurrentRuns]:
    """The module's Spark applications, started together; each test waits for and checks its own."""
    runs = ConcurrentRuns(tmp_path_factory.mktemp("keras-fit-runs"))
    trainer = ["--trainer", KERAS_TRAINER, "--trainer-arg", "epochs=5"]
    for name, workers in (("fit-one-worker", "1"), ("fit-two-workers", "2")):
        runs.start(name, [*trainer, "--num-workers", workers, "--trainer-arg", "early_stop=1",
                          "--trainer-arg", f"epoch_log={runs.path(name)}"])  # fmt: skip
    runs.start(
        "fit-killed-worker",
        [
            *trainer, "--num-workers", "2",
            "--trainer-arg", f"epoch_log={runs.path('fit-killed-worker')}",
            "--trainer-arg", "fail_at_epoch=2",
            "--trainer-arg", "fail_rank=1",
            "--trainer-arg", f"fail_marker={runs.path('fit-killed-worker.marker')}",
        ],
    )  # fmt: skip
    yield runs
    runs.stop_all()


@pytest.mark.slow
def test_model_fit_trains_on_one_and_two_workers_with_early_stopping_and_a_custom_callback(runs):
    import tf_keras

    for name, workers in (("fit-one-worker", 1), ("fit-two-workers", 2)):
        result = runs.result(name)
        assert result.returncode == 0, result.log_tail()
        summary = result.summary
        assert summary["workers"] == workers
        assert summary["model_class"] == "tf_keras.src.engine.functional.Functional", "tf.keras is tf-keras"
        assert summary["tensorflow_preloaded"] == [False] * workers
        assert (summary["epochs"], summary["epochs_trained"], summary["stopped_early"]) == (5, 2, True)
        assert summary["history_epochs"] == [0, 1]
        assert summary["global_step"] == 2 * STEPS_PER_EPOCH
        assert summary["resumed_from_step"] is None and summary["resumed_from_epoch"] is None
        assert summary["loss"] == summary["epoch_losses"][-1] < summary["epoch_losses"][0]
        logs = {rank: epoch_log(runs.path(name), rank) for rank in range(workers)}
        for rank, fits in logs.items():
            assert len(fits) == 1 and [line.split()[0] for line in fits[0]] == ["0", "1"], f"rank {rank}: {fits}"
            assert [float(line.split()[2]) for line in fits[0]] == [STEPS_PER_EPOCH * 64] * 2, (
                "every step trains the global batch of 64 examples, 32 from each of two workers"
            )
        assert logs[0] == logs[workers - 1], "every worker sees the same all-reduced loss (EarlyStopping agrees)"
        reloaded = tf_keras.models.load_model(result.output_dir / "model.keras", compile=False)
        ratings = reloaded({"user_id": np.array([0, 1]), "item_id": np.array([2, 3]),
                            "scaled_ids": np.array([[0.0, 0.02], [0.03, 0.03]], dtype=np.float32)})
        assert ratings.shape == (2,) and np.isfinite(ratings.numpy()).all()
    one, two = runs.result("fit-one-worker").summary, runs.result("fit-two-workers").summary
    assert two["loss"] == pytest.approx(one["loss"], rel=0.05)


@pytest.mark.slow
def test_a_worker_killed_mid_fit_resumes_from_backup_and_restore(runs):
    summary = runs.recovered_summary("fit-killed-worker")
    # Rank 1 dies right after epoch 2's backup; the chief has written it too unless Spark killed it first.
    assert summary["resumed_from_epoch"] in (2, 3), "resumed from a backup, not from epoch 0"
    assert summary["resumed_from_step"] == summary["resumed_from_epoch"] * STEPS_PER_EPOCH
    assert (summary["global_step"], summary["epochs_trained"], summary["stopped_early"]) == (
        5 * STEPS_PER_EPOCH, 5, False)  # fmt: skip
    for rank in (0, 1):
        first, rerun = epoch_log(runs.path("fit-killed-worker"), rank)
        assert [line.split()[0] for line in first] == ["0", "1", "2"][: len(first)] and len(first) >= 2
        assert [line.split()[0] for line in rerun] == [str(epoch) for epoch in range(summary["resumed_from_epoch"], 5)]
    assert not (Path(summary["checkpoint_dir"].removeprefix("file://")) / "keras-backup" / "chief").exists(), (
        "BackupAndRestore deletes its backup once fit finished"
    )
    assert (runs.result("fit-killed-worker").output_dir / "model.keras").is_file()


def test_a_task_that_already_imported_tensorflow_with_keras_3_is_refused():
    probe = "import tensorflow; from tfspark.task.keras_fit import use_legacy_keras; use_legacy_keras()"
    refused = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert refused.returncode != 0
    assert "already imported TensorFlow with Keras 3" in refused.stderr
    assert "spark.python.worker.reuse=false" in refused.stderr
