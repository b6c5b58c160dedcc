"""Where the e2e training step's time goes besides the step: the FM's lazy step on two workers with its inputs
drawn five ways, side by side.

In the 10M e2e day a training step took ~8.3 ms, against 2.8 ms for the same step on constant inputs in
`bench.e2e_train_step`; py-spy found the Python side idle. This times the trainer's step (`user_update=lazy`,
two `MultiWorkerMirroredStrategy` workers on 127.0.0.1, 128 examples each) with its batch from

  constant    the same tensors every step (as `bench.e2e_train_step`)
  tensors     a distributed `tf.data` iterator over one repeated batch (`distribute_datasets_from_function`)
  chunks      the same iterator over a repeated chunk of 128 batches, `unbatch`ed (the feed's shape, no Python)
  generator   the same chunk from `Dataset.from_generator`, `unbatch`ed (the feed's pipeline, no feed)
  feed        `tfspark.feed.BatchFeed.dataset()` over an in-memory `ArrowCache` of random rows (the job's path)

    .venv/bin/python -m bench.train_step_inputs --users 120000 --steps 300
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from bench.e2e_train_step import GLOBAL_BATCH, ITEMS, measure

SOURCES = ("constant", "tensors", "chunks", "generator", "feed")
CACHE_ROWS = 200_000
RECORD_BATCH_ROWS = 16_384


def _random_rows(rng: np.random.Generator, users: int, rows: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    from jobs.feature_spec import GENRES, HISTORY_COLUMNS

    features = {"user_idx": rng.integers(0, users, rows), "item_idx": rng.integers(0, ITEMS, rows),
                "year_idx": rng.integers(0, 22, rows), "genres": rng.random((rows, len(GENRES)), "float32"),
                **{column: rng.random(rows, "float32") for column in HISTORY_COLUMNS}}
    return features, rng.integers(1, 6, rows).astype("float32")


def _arrow_cache(features: dict[str, np.ndarray], labels: np.ndarray):
    import pyarrow as pa

    from tfspark.feed import ArrowCache

    cache = ArrowCache()
    for start in range(0, len(labels), RECORD_BATCH_ROWS):
        part = slice(start, start + RECORD_BATCH_ROWS)
        columns = {name: pa.FixedSizeListArray.from_arrays(pa.array(values[part].reshape(-1)), values.shape[1])
                   if values.ndim == 2 else pa.array(values[part]) for name, values in features.items()}
        cache.append(pa.RecordBatch.from_pydict({**columns, "label": pa.array(labels[part])}))
    cache.finish()
    return cache


def worker(rank: int, ports: list[int], users: int, steps: int, repeat: int) -> None:
    """One of the two workers: print, on rank 0, the best ms per step of each input source as JSON."""
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                                          "task": {"type": "worker", "index": rank}})
    import tensorflow as tf

    from jobs.feature_spec import FeatureSpec
    from jobs.fm_model import FMHyperParameters, build_fm_model
    from jobs.fm_trainer import USER_TABLES, fused_adam, lazy_tables, steps_per_lookup, take_weight_l2
    from tfspark.feed import BatchFeed

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    rows = GLOBAL_BATCH // len(ports)
    rng = np.random.default_rng(rank)
    features, labels = _random_rows(rng, users, CACHE_ROWS)
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
    best = {}
    for source in SOURCES:
        hparams = FMHyperParameters()
        with strategy.scope():
            model = build_fm_model(FeatureSpec(users, ITEMS, 3.5, 1.0, 5.0), hparams)
            row_steps = steps_per_lookup(np.full(users, 2 * GLOBAL_BATCH), users)
            optimizer = fused_adam(hparams.learning_rate, take_weight_l2(model),
                                   lazy_tables(model, USER_TABLES, row_steps))
            optimizer.build(model.trainable_variables)

        def replica_step(inputs, labels, model=model, optimizer=optimizer):
            with tf.GradientTape() as tape:
                loss = tf.nn.compute_average_loss(tf.square(labels - model(inputs, training=True)),
                                                  global_batch_size=GLOBAL_BATCH)
            optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables,
                                          strict=True))

        if source == "constant":
            @tf.function
            def train_steps(count: tf.Tensor, replica_step=replica_step) -> tf.Tensor:
                for _ in tf.range(count):
                    strategy.run(replica_step, args=batch)
                return tf.constant(0)
        else:
            iterator = iter(strategy.distribute_datasets_from_function(lambda _, make=datasets[source]: make()))

            @tf.function
            def train_steps(count: tf.Tensor, replica_step=replica_step, iterator=iterator) -> tf.Tensor:
                for _ in tf.range(count):
                    strategy.run(replica_step, args=next(iterator))
                return tf.constant(0)

        train_steps(tf.constant(5, tf.int64))
        best[source] = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            train_steps(tf.constant(steps, tf.int64)).numpy()
            best[source] = min(best[source], (time.perf_counter() - started) / steps * 1000)
    if rank == 0:
        print(json.dumps(best), flush=True)


def main(argv: list[str] | None = None) -> list[tuple[int, dict[str, float]]]:
    """Print ms per step of each input source, and its ratio to constant inputs, per user vocabulary size."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", default="120000", help="user vocabulary sizes (%(default)s)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # the two ports, in a worker process
    parser.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.rank, json.loads(args.worker), int(args.users), args.steps, args.repeat)
        return []
    results = []
    print("| user rows | " + " | ".join(f"{source} (ms/step)" for source in SOURCES) + " | feed / constant |")
    print("|--:|" + "--:|" * (len(SOURCES) + 1))
    for users in (int(size) for size in args.users.split(",")):
        best = measure(users, args.steps, args.repeat, module="bench.train_step_inputs")
        results.append((users, best))
        print(f"| {users:,} | " + " | ".join(f"{best[source]:.2f}" for source in SOURCES)
              + f" | {best['feed'] / best['constant']:.1f}× |", flush=True)
    return results


if __name__ == "__main__":
    main()
