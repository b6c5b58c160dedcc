"""Checkpoint locations and the chief/non-chief split of `TrainingCheckpoint`."""

from __future__ import annotations

import os

from tfspark.checkpoint import TrainingCheckpoint, url_to_path


def test_file_urls_and_paths_become_absolute_local_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert url_to_path("file:///lake/checkpoints/m/run") == "/lake/checkpoints/m/run"
    assert url_to_path("relative/ckpt") == str(tmp_path / "relative" / "ckpt")
    assert url_to_path("/abs/ckpt") == "/abs/ckpt"


def test_other_schemes_are_left_to_tensorflow_filesystems():
    assert url_to_path("gs://bucket/ckpt") == "gs://bucket/ckpt"
    assert url_to_path("hdfs://nn:8020/ckpt") == "hdfs://nn:8020/ckpt"


def test_only_the_chief_writes_to_the_checkpoint_dir(tmp_path):
    import keras
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    optimizer = keras.optimizers.SGD(0.1)
    optimizer.build(model.trainable_variables)
    shared = tmp_path / "ckpt"

    worker = TrainingCheckpoint(strategy, model, optimizer, str(shared), is_chief=False)
    assert worker.restore() is None
    worker.save(step=5, epoch_loss_sum=1.5, epoch_loss_steps=5)
    worker.close()
    assert not shared.exists()

    chief = TrainingCheckpoint(strategy, model, optimizer, str(shared), is_chief=True)
    chief.save(step=7, epoch_loss_sum=2.0, epoch_loss_steps=3)
    assert sorted(os.listdir(shared)) == ["checkpoint", "ckpt-7.data-00000-of-00001", "ckpt-7.index"]
    restored = TrainingCheckpoint(strategy, model, optimizer, str(shared), is_chief=False)
    assert restored.restore() == 7
    assert (float(restored.epoch_loss_sum.numpy()), int(restored.epoch_loss_steps.numpy())) == (2.0, 3)
    restored.close()
