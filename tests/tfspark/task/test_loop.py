"""`ctx.fit`, the resumable training loop, on one local device (the Spark tests cover several workers)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tfspark.context import TrainContext
from tfspark.task.feed import BatchFeed, cache_partition

ROWS, BATCH, EPOCHS = 200, 20, 3


def linear_rows(rows: int = ROWS) -> list[pa.RecordBatch]:
    """y = 2·x0 − x1 + 0.5 on a fixed grid of x, as Arrow batches with an array<float> feature."""
    x = np.stack([np.linspace(-1, 1, rows), np.cos(np.arange(rows))], axis=1).astype(np.float32)
    y = 2 * x[:, 0] - x[:, 1] + 0.5
    features = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 2)
    return [pa.RecordBatch.from_arrays([features, pa.array(y)], names=["x", "y"])]


def tiny_model():
    import keras

    keras.utils.set_random_seed(1)
    inputs = {"x": keras.Input((2,), name="x")}
    outputs = keras.layers.Reshape(())(keras.layers.Dense(1)(inputs["x"]))
    return keras.Model(inputs, outputs), keras.optimizers.Adam(0.2)


def squared_error(labels, predictions):
    import tensorflow as tf

    return tf.square(labels - predictions)


def run(tmp_path: Path, checkpoint_dir: Path | str, on_step_end=None, rank: int = 0,
        output_dir: str | None = None, checkpoint_every: int = 4,
        checkpoint_seconds: float | None = None) -> tuple[dict, list, TrainContext]:
    """Train the tiny model for EPOCHS on the linear rows; return fit's result, the weights and the context."""
    import tensorflow as tf

    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    steps_per_epoch = ROWS // BATCH
    with cache_partition(linear_rows()) as cache:
        feed = BatchFeed(cache, "y", BATCH, steps_per_epoch * EPOCHS, seed=5)
        ctx = TrainContext(
            strategy=strategy,
            rank=rank,
            num_workers=1,
            steps_per_epoch=steps_per_epoch,
            epochs=EPOCHS,
            batch_size=BATCH,
            per_worker_batch_size=BATCH,
            checkpoint_dir=str(checkpoint_dir),
            output_dir=output_dir or str(tmp_path / "output"),
            checkpoint_every=checkpoint_every,
            checkpoint_seconds=checkpoint_seconds,
            log_every=7,
            feed=feed,
        )
        with strategy.scope():
            model, optimizer = tiny_model()
        result = ctx.fit(model, optimizer, squared_error, feed.dataset(), on_step_end=on_step_end)
        return result, [weight.numpy() for weight in model.weights], ctx


class Interrupt(Exception):
    """Stands for a worker dying mid-training."""


def test_fit_learns_and_checkpoints_every_k_steps(tmp_path, caplog):
    import tensorflow as tf

    with caplog.at_level(logging.INFO, logger="tfspark"):
        result, _, _ = run(tmp_path, tmp_path / "ckpt")
    progress = [record.getMessage() for record in caplog.records if " step " in record.getMessage()]
    assert progress[0].startswith("rank 0 step 7/30 epoch 1/3 loss ") and re.search(r" ETA \d+ s$", progress[0])
    assert progress[-1].startswith("rank 0 step 30/30 epoch 3/3") and progress[-1].endswith(" ETA 0 s")
    assert result["global_step"] == 30 and result["resumed_from_step"] is None
    assert len(result["epoch_losses"]) == EPOCHS
    assert result["epoch_losses"][-1] < result["epoch_losses"][0] / 4
    assert result["loss"] == result["epoch_losses"][-1]
    assert result["fit_seconds"] > 0 and result["examples_per_second"] == pytest.approx(
        30 * BATCH / result["fit_seconds"], rel=0.01)
    assert tf.train.latest_checkpoint(str(tmp_path / "ckpt")).endswith("ckpt-30")
    assert checkpoint_steps(tmp_path / "ckpt") == [24, 28, 30], "every 4 steps and at the end, the last 3 kept"
    assert [epoch["epoch"] for epoch in result["epoch_metrics"]] == [1, 2, 3]
    assert [epoch["loss"] for epoch in result["epoch_metrics"]] == pytest.approx(result["epoch_losses"])
    assert all(epoch["examples_per_second"] > 0 for epoch in result["epoch_metrics"])


def test_the_chief_writes_loss_throughput_and_learning_rate_for_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result, _, _ = run(tmp_path, tmp_path / "ckpt")
    assert result["tensorboard_dir"] == str(tmp_path / "ckpt" / "tensorboard")
    events = EventAccumulator(result["tensorboard_dir"], size_guidance={"tensors": 0})
    events.Reload()
    assert set(events.Tags()["tensors"]) == {"loss", "examples_per_second", "learning_rate"}
    logged = {name: [(event.step, float(tf_value(event))) for event in events.Tensors(name)]
              for name in ("loss", "learning_rate")}
    assert [step for step, _ in logged["loss"]] == [7, 10, 14, 20, 21, 28, 30], "every 7 steps and at epoch ends"
    assert all(value == pytest.approx(0.2) for _, value in logged["learning_rate"])
    _, _, other = run(tmp_path / "other", tmp_path / "other" / "ckpt", rank=1)
    assert not (tmp_path / "other" / "ckpt" / "tensorboard").exists(), "only the chief writes events"


def tf_value(event) -> float:
    """The scalar of a TensorBoard tensor event."""
    import tensorflow as tf

    return tf.make_ndarray(event.tensor_proto).item()


def checkpoint_steps(directory: Path) -> list[int]:
    """The steps of the checkpoints kept in `directory`."""
    return sorted(int(path.name.split("-")[1].split(".")[0]) for path in directory.glob("ckpt-*.index"))


def test_checkpoint_seconds_saves_when_that_much_time_passed_since_the_last_save(tmp_path, monkeypatch):
    class Clock:
        now = 0.0

        def monotonic(self) -> float:
            return self.now

    clock = Clock()
    monkeypatch.setattr("tfspark.task.loop.time", clock)

    def slow_steps(step: int, loss: float) -> None:
        clock.now += 10.0 if step in (5, 17) else 0.001

    result, _, _ = run(tmp_path, tmp_path / "ckpt", on_step_end=slow_steps, checkpoint_every=1000,
                       checkpoint_seconds=9.0)
    assert result["global_step"] == 30
    assert checkpoint_steps(tmp_path / "ckpt") == [6, 18, 30], "the step after each slow one, and at the end"


def test_an_interrupted_fit_resumes_where_it_stopped_and_ends_like_an_uninterrupted_one(tmp_path):
    straight, straight_weights, _ = run(tmp_path / "a", tmp_path / "a" / "ckpt")

    def die_at_step_14(step: int, loss: float) -> None:
        if step == 14:
            raise Interrupt

    with pytest.raises(Interrupt):
        run(tmp_path / "b", tmp_path / "b" / "ckpt", on_step_end=die_at_step_14)
    resumed, resumed_weights, _ = run(tmp_path / "b", tmp_path / "b" / "ckpt")

    assert resumed["resumed_from_step"] == 12, "the last checkpoint (every 4 steps) before the failure"
    assert resumed["global_step"] == straight["global_step"] == 30
    assert resumed["loss"] == pytest.approx(straight["loss"], rel=1e-4)
    for expected, actual in zip(straight_weights, resumed_weights, strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-6)


def test_a_finished_run_restarted_trains_no_more_and_reports_its_final_loss(tmp_path):
    first, weights, _ = run(tmp_path, tmp_path / "ckpt")
    calls = []
    again, weights_again, _ = run(tmp_path, tmp_path / "ckpt", on_step_end=lambda *args: calls.append(args))
    assert calls == []
    assert again["resumed_from_step"] == again["global_step"] == 30
    assert again["loss"] == pytest.approx(first["loss"])
    for expected, actual in zip(weights, weights_again, strict=True):
        np.testing.assert_array_equal(actual, expected)


def test_save_model_writes_the_chiefs_model_only(tmp_path):
    import keras

    _, weights, chief = run(tmp_path / "chief", tmp_path / "chief" / "ckpt")
    model, _ = tiny_model()
    for variable, value in zip(model.weights, weights, strict=True):
        variable.assign(value)
    path = chief.save_model(model)
    assert path == str(tmp_path / "chief" / "output" / "model.keras")
    np.testing.assert_allclose(keras.saving.load_model(path).weights[0].numpy(), weights[0])
    _, _, other = run(tmp_path / "other", tmp_path / "other" / "ckpt", rank=1)
    assert other.save_model(model) is None
    assert not (tmp_path / "other" / "output").exists()
    assert not (tmp_path / "other" / "ckpt").exists(), "a non-chief writes its checkpoints to a throwaway dir"


def test_checkpoints_and_the_model_on_s3_survive_an_interrupted_fit(tmp_path, s3_lake):
    import keras

    from tfspark.driver.runner import write_summary
    from tfspark.storage import RemoteDirectory

    checkpoints, output = f"{s3_lake.url}/checkpoints/tiny/run-1", f"{s3_lake.url}/models/tiny/dt=2026-11-20"

    def die_at_step_14(step: int, loss: float) -> None:
        if step == 14:
            raise Interrupt

    with pytest.raises(Interrupt):
        run(tmp_path / "a", checkpoints, on_step_end=die_at_step_14, output_dir=output)
    resumed, weights, chief = run(tmp_path / "b", checkpoints, output_dir=output)
    assert resumed["resumed_from_step"] == 12 and resumed["global_step"] == 30
    board = RemoteDirectory.for_url(resumed["tensorboard_dir"])
    assert resumed["tensorboard_dir"] == f"{checkpoints}/tensorboard"
    assert len([name for name in board.names() if name.startswith("events.out.tfevents.")]) == 2, "one per attempt"

    model, _ = tiny_model()
    for variable, value in zip(model.weights, weights, strict=True):
        variable.assign(value)
    assert chief.save_model(model) == f"{output}/model.keras"
    assert write_summary(output, {"global_step": 30}) == f"{output}/train_summary.json"
    stored = RemoteDirectory.for_url(output)
    assert stored.read_bytes("train_summary.json").startswith(b"{")
    (tmp_path / "model.keras").write_bytes(stored.read_bytes("model.keras"))
    np.testing.assert_allclose(keras.saving.load_model(tmp_path / "model.keras").weights[0].numpy(), weights[0])
