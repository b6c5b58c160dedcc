"""Checkpoint locations and the chief/non-chief split of `TrainingCheckpoint`."""

from __future__ import annotations

import os

from pyarrow import fs as pafs

from tfspark.storage import url_to_path
from tfspark.task.checkpoint import TrainingCheckpoint


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


def test_a_checkpoint_dir_on_s3_is_mirrored_and_committed_by_its_index(s3_lake):
    import keras
    import numpy as np
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()

    def new_model():
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        optimizer = keras.optimizers.SGD(0.1)
        optimizer.build(model.trainable_variables)
        return model, optimizer

    model, optimizer = new_model()
    url = f"{s3_lake.url}/checkpoints/fm/run-1"
    chief = TrainingCheckpoint(strategy, model, optimizer, url, is_chief=True, max_to_keep=2)
    assert chief.restore() is None
    for step in (5, 10, 15):
        model.layers[0].kernel.assign([[float(step)]])
        assert chief.save(step=step, epoch_loss_sum=step / 2, epoch_loss_steps=step) == f"{url}/ckpt-{step}"
    chief.close()
    remote = s3_lake.path("checkpoints/fm/run-1")
    listed = {info.path.rsplit("/", 1)[-1] for info in s3_lake.filesystem.get_file_info(
        pafs.FileSelector(remote)) if info.is_file}
    assert listed == {"checkpoint", "ckpt-10.index", "ckpt-10.data-00000-of-00001", "ckpt-15.index",
                      "ckpt-15.data-00000-of-00001"}, "retired checkpoints are deleted from the store"

    with s3_lake.filesystem.open_output_stream(f"{remote}/ckpt-20.index") as stream:
        stream.write(b"half an upload: the chief died before the index")
    other_model, other_optimizer = new_model()
    worker = TrainingCheckpoint(strategy, other_model, other_optimizer, url, is_chief=False)
    assert worker.restore() == 15
    assert np.allclose(other_model.layers[0].kernel.numpy(), [[15.0]])
    assert (float(worker.epoch_loss_sum.numpy()), int(worker.epoch_loss_steps.numpy())) == (7.5, 15)
    worker.save(step=20, epoch_loss_sum=1.0, epoch_loss_steps=1)
    worker.close()
    with s3_lake.filesystem.open_input_stream(f"{remote}/checkpoint") as stream:
        assert 'model_checkpoint_path: "ckpt-15"' in stream.read().decode(), "only the chief commits"
