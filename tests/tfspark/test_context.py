"""`TrainContext` facts: the chief and the step budget, and what it gives a Keras `model.fit`."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from tfspark.context import TrainContext


def context(rank: int = 0, **fields: Any) -> TrainContext:
    """A context of worker `rank` of two, in the default strategy (no cluster needed)."""
    import tensorflow as tf

    return TrainContext(
        **{
            "strategy": tf.distribute.get_strategy(),
            "rank": rank,
            "num_workers": 2,
            "steps_per_epoch": 24,
            "epochs": 4,
            "batch_size": 64,
            "per_worker_batch_size": 32,
            "checkpoint_dir": "/tmp/ckpt",
            "output_dir": "/tmp/out",
            **fields,
        }
    )


def test_context_knows_the_chief_and_the_step_budget():
    assert context(0).is_chief and not context(1).is_chief
    assert context(1).total_steps == 96
    assert context(0).replicas_per_worker == 1


def test_keras_fit_backs_up_under_the_checkpoint_dir_and_refuses_a_store_tensorflow_cannot_write(
    tmp_path, s3_server, monkeypatch
):
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    bucket = f"checkpoints-{secrets.token_hex(4)}"
    s3_server.create_bucket(bucket)

    assert context(checkpoint_dir=str(tmp_path)).backup_dir == str(tmp_path / "keras-backup")
    with pytest.raises(ValueError, match=rf"cannot write s3://{bucket}/run-1/keras-backup .*--checkpoint-dir"):
        _ = context(checkpoint_dir=f"s3://{bucket}/run-1").backup_dir


def test_a_keras_fit_trainer_is_told_to_call_model_fit_instead_of_ctx_fit():
    with pytest.raises(RuntimeError, match="call model.fit"):
        context(keras_fit=True).fit(model=None, optimizer=None, loss_fn=None, dataset=None)
