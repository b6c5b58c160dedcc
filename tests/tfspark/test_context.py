"""`TrainContext` facts: the chief and the step budget."""

from __future__ import annotations

from tfspark.context import TrainContext


def test_context_knows_the_chief_and_the_step_budget():
    import tensorflow as tf

    def context(rank: int) -> TrainContext:
        return TrainContext(
            strategy=tf.distribute.get_strategy(),
            rank=rank,
            num_workers=2,
            steps_per_epoch=24,
            epochs=4,
            batch_size=64,
            per_worker_batch_size=32,
            checkpoint_dir="/tmp/ckpt",
            output_dir="/tmp/out",
        )

    assert context(0).is_chief and not context(1).is_chief
    assert context(1).total_steps == 96
    assert context(0).replicas_per_worker == 1
