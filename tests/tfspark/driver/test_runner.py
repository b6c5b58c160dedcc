"""The driver side of a run without Spark: the `run_trainer` contract (shutdown always runs) and the schema
checks made before any task starts."""

from __future__ import annotations

import pytest
from pyspark.sql import types as T

from tfspark.config import RunConfig
from tfspark.driver.runner import _task_payload, check_worker_reuse, run_trainer, validate_schema
from tfspark.trainer import TFSparkTrainer


class KerasFitTrainer(TFSparkTrainer):
    """Trains with Keras `model.fit`."""

    keras_fit = True


class RecordingTrainer(TFSparkTrainer):
    """Fails where told and records whether shutdown ran."""

    def __init__(self, **kwargs: str) -> None:
        super().__init__(**kwargs)
        self.shutdowns = 0

    def pre_train(self, spark):
        raise RuntimeError("the lake is unreachable")

    def shutdown(self) -> None:
        self.shutdowns += 1
        if self.args.get("shutdown_fails"):
            raise OSError("could not close the connection pool")


def test_shutdown_runs_when_pre_train_fails(tmp_path):
    trainer = RecordingTrainer()
    with pytest.raises(RuntimeError, match="lake is unreachable"):
        run_trainer(None, trainer, RunConfig(checkpoint_dir=str(tmp_path), output_dir=str(tmp_path)))
    assert trainer.shutdowns == 1


def test_a_failing_shutdown_does_not_hide_the_training_failure(tmp_path):
    trainer = RecordingTrainer(shutdown_fails="1")
    with pytest.raises(RuntimeError, match="lake is unreachable"):
        run_trainer(None, trainer, RunConfig(checkpoint_dir=str(tmp_path), output_dir=str(tmp_path)))
    assert trainer.shutdowns == 1


def test_columns_are_checked_on_the_driver_before_any_task_starts():
    fields = [T.StructField("user_id", T.LongType()), T.StructField("label", T.DoubleType())]
    validate_schema(T.StructType([*fields, T.StructField("v", T.ArrayType(T.FloatType()))]), "label")
    with pytest.raises(TypeError, match="'title' is string"):
        validate_schema(T.StructType([*fields, T.StructField("title", T.StringType())]), "label")
    with pytest.raises(ValueError, match="label column 'rating'"):
        validate_schema(T.StructType(fields), "rating")
    with pytest.raises(ValueError, match="at least one feature"):
        validate_schema(T.StructType(fields[1:]), "label")


@pytest.mark.parametrize(
    ("run_every", "run_seconds", "expected"),
    [(None, None, (200, None)), (50, None, (50, None)), (None, 120.0, (200, 120.0)), (7, 3.5, (7, 3.5))],
)
def test_a_runs_checkpoint_interval_overrides_the_trainers(tmp_path, run_every, run_seconds, expected):
    config = RunConfig(checkpoint_dir=str(tmp_path / "ckpt"), output_dir=str(tmp_path / "out"),
                       checkpoint_every=run_every, checkpoint_seconds=run_seconds)
    payload = _task_payload(TFSparkTrainer(), config, (), None)
    assert (payload.checkpoint_every, payload.checkpoint_seconds) == expected


def test_a_keras_fit_trainer_is_refused_on_reused_python_workers_before_any_task_starts(caplog):
    with pytest.raises(ValueError, match="KerasFitTrainer sets keras_fit .* set spark.python.worker.reuse=false"):
        check_worker_reuse(KerasFitTrainer(), "true")
    check_worker_reuse(KerasFitTrainer(), "false")
    check_worker_reuse(TFSparkTrainer(), "true")
    assert "spark.python.worker.reuse is true" in caplog.text, "any other trainer is only warned"


def test_keras_fit_reaches_the_tasks_as_a_plain_field_of_the_payload(tmp_path):
    config = RunConfig(checkpoint_dir=str(tmp_path / "ckpt"), output_dir=str(tmp_path / "out"))
    assert _task_payload(KerasFitTrainer(), config, (), None).keras_fit is True
    assert _task_payload(TFSparkTrainer(), config, (), None).keras_fit is False
