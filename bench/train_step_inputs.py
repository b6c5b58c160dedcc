"""Where the e2e training step's time goes besides the step: the FM's lazy step on two workers with its inputs drawn
six ways side by side, from constant tensors to the tfspark feed, distributed and local.

    .venv/bin/python -m bench.train_step_inputs --users 120000 --steps 300

See docs/performance.md.
"""

from __future__ import annotations

import numpy as np

from bench.harness import print_json_line
from bench.support.step_workers import (
    GLOBAL_BATCH,
    best_ms_per_step,
    join_cluster,
    measure_sizes,
    random_examples,
    replica_step,
    run_workers_or_parse,
)

SOURCES = ("constant", "tensors", "chunks", "generator", "feed", "feed_local")
CACHE_ROWS = 200_000
RECORD_BATCH_ROWS = 16_384


def _arrow_cache(features: dict[str, np.ndarray], labels: np.ndarray):
    import pyarrow as pa

    from tfspark.task.feed import cache_partition

    def record_batches():
        for start in range(0, len(labels), RECORD_BATCH_ROWS):
            part = slice(start, start + RECORD_BATCH_ROWS)
            columns = {name: pa.FixedSizeListArray.from_arrays(pa.array(values[part].reshape(-1)), values.shape[1])
                       if values.ndim == 2 else pa.array(values[part]) for name, values in features.items()}
            yield pa.RecordBatch.from_pydict({**columns, "label": pa.array(labels[part])})

    return cache_partition(record_batches())


def worker(rank: int, ports: list[int], users: int, steps: int, repeat: int) -> None:
    """One of the two workers: print, on rank 0, the best ms per step of each input source as JSON."""
    strategy = join_cluster(ports, rank)
    import tensorflow as tf

    from tfspark.task.feed import BatchFeed

    rows = GLOBAL_BATCH // len(ports)
    features, labels = random_examples(np.random.default_rng(rank), users, CACHE_ROWS)
    batch = ({name: values[:rows] for name, values in features.items()}, labels[:rows])
    chunk = tf.nest.map_structure(lambda values: np.stack([values] * 128), batch)
    cache = _arrow_cache(features, labels)

    def chunks():
        while True:
            yield chunk

    chunk_spec = tf.nest.map_structure(lambda values: tf.TensorSpec((None, *values.shape[1:]), values.dtype), chunk)
    datasets = {
        "tensors": lambda: tf.data.Dataset.from_tensors(batch).repeat(),
        "chunks": lambda: tf.data.Dataset.from_tensors(chunk).repeat().unbatch().prefetch(tf.data.AUTOTUNE),
        "generator": lambda: tf.data.Dataset.from_generator(chunks, output_signature=chunk_spec).unbatch()
        .prefetch(tf.data.AUTOTUNE),
        "feed": lambda: BatchFeed(cache, "label", rows, 1 << 40, seed=1, rank=rank).dataset(),
    }
    datasets["feed_local"] = datasets["feed"]
    best = {}
    for source in SOURCES:
        step = replica_step(strategy, users, "lazy")
        if source == "constant":
            @tf.function
            def train_steps(count: tf.Tensor, step=step) -> tf.Tensor:
                for _ in tf.range(count):
                    strategy.run(step, args=batch)
                return tf.constant(0)
        else:
            make = datasets[source]
            iterator = iter(make() if source == "feed_local"
                            else strategy.distribute_datasets_from_function(lambda _, make=make: make()))

            @tf.function
            def train_steps(count: tf.Tensor, step=step, iterator=iterator) -> tf.Tensor:
                for _ in tf.range(count):
                    strategy.run(step, args=next(iterator))
                return tf.constant(0)

        best[source] = best_ms_per_step(train_steps, steps, repeat)
    if rank == 0:
        print_json_line(best)


def main(argv: list[str] | None = None) -> list[tuple[int, dict[str, float]]]:
    """Print ms per step of each input source, and the distributed feed's ratio to the local one, per user
    vocabulary size."""
    args = run_workers_or_parse(argv, __doc__, "120000", 300, worker)
    if args is None:
        return []
    return measure_sizes(
        args, "bench.train_step_inputs", [*(f"{source} (ms/step)" for source in SOURCES), "feed / feed_local"],
        lambda best: [*(f"{best[source]:.2f}" for source in SOURCES), f"{best['feed'] / best['feed_local']:.1f}×"])


if __name__ == "__main__":
    main()
