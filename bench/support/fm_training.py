"""The project's FM trainer run in this process, as one tfspark worker on the direct Parquet path would run it, for
benchmarks that need a trained model without a Spark barrier job (quality, scoring).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

    from lakeloop.fm_trainer import FMTrainer

SPARK_ARROW_BATCH_ROWS = 10_000


def train_in_process(trainer: FMTrainer, examples: pa.Table, output_dir: Path) -> dict:
    """Run `trainer.train` as one tfspark worker on the direct Parquet path would: record batches of Spark's
    10,000 rows filled into the cache in the background, the first epoch in arrival order, one device, the
    runtime's loop; its training summary."""
    import tensorflow as tf

    from tfspark import TrainContext
    from tfspark.task.feed import ArrowCache, BackgroundFill, BatchFeed
    from tfspark.task.rendezvous import plan_steps

    plan = plan_steps([examples.num_rows], trainer.batch_size, trainer.epochs)
    with ArrowCache() as cache, tempfile.TemporaryDirectory() as checkpoints:
        fill = BackgroundFill(examples.to_batches(max_chunksize=SPARK_ARROW_BATCH_ROWS), cache,
                              examples.num_rows).start()
        feed = BatchFeed(cache, trainer.label_column, plan.per_worker_batch_size, plan.total_steps,
                         shuffle=trainer.shuffle, seed=trainer.seed, fill=fill)
        ctx = TrainContext(strategy=tf.distribute.OneDeviceStrategy("/cpu:0"), rank=0, num_workers=1,
                           steps_per_epoch=plan.steps_per_epoch, epochs=plan.epochs,
                           batch_size=plan.global_batch_size, per_worker_batch_size=plan.per_worker_batch_size,
                           checkpoint_dir=checkpoints, output_dir=str(output_dir), checkpoint_every=plan.total_steps,
                           log_every=plan.steps_per_epoch, rows=examples.num_rows, feed=feed)
        try:
            return trainer.train(feed.dataset(), ctx)
        finally:
            fill.close()
