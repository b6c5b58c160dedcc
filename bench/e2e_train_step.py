"""The FM's training step on two workers at growing user vocabularies: Keras' Adam against the trainer's optimizer,
with the user tables updated densely and lazily.

The end-to-end bench (`bench.e2e`) found `train_model` slowing down per example as the day grows: the users
of a day, hence the rows of the user tables, grow with it, and a step's cost grew with the tables. The FM's
L2 penalty covers whole tables, so its gradient is dense: every step, the two workers summed every row of
the user tables (all-reduce) and Adam rewrote every row and both of its moments. This runs the DAG's set-up
in miniature: two worker processes on 127.0.0.1 under `MultiWorkerMirroredStrategy`, each with 128 examples
of the global batch of 256 (random inputs), the FM of `lakeloop.fm_model` with its default hyper-parameters, and
times `--steps` synchronous steps of each variant, side by side per vocabulary size:

  keras    `keras.optimizers.Adam` on the loss with the L2 penalty, as the trainer first had it
  dense    the trainer's `take_weight_l2` and `fused_adam` with `user_update=dense`: the L2 gradient added after
           the all-reduce (the same update), sparse gradients of tables over 4 MiB summed as rows, Adam in one
           fused kernel on every row of every table
  lazy     the same with `user_update=lazy` (the default): the user tables' rows looked up by the step are read
           and updated, their L2 scaled by their steps per lookup, the others left as they are (`lazy_tables`)

    .venv/bin/python -m bench.e2e_train_step
    .venv/bin/python -m bench.e2e_train_step --users 12000,120000 --steps 100
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from lakeloop.services import free_port

ITEMS = 1683  # MovieLens 100K's movies + the OOV index
GLOBAL_BATCH = 256
VARIANTS = ("keras", "dense", "lazy")


def join_cluster(ports: list[int], rank: int):
    """This process as worker `rank` of a `MultiWorkerMirroredStrategy` cluster on 127.0.0.1 `ports`."""
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                                          "task": {"type": "worker", "index": rank}})
    import tensorflow as tf

    return tf.distribute.MultiWorkerMirroredStrategy()


def random_examples(rng: np.random.Generator, users: int, rows: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """`rows` random FM inputs over `users` users and MovieLens' movies, and their ratings."""
    from lakeloop.features import GENRES, HISTORY_COLUMNS

    features = {"user_idx": rng.integers(0, users, rows), "item_idx": rng.integers(0, ITEMS, rows),
                "year_idx": rng.integers(0, 22, rows), "genres": rng.random((rows, len(GENRES)), "float32"),
                **{column: rng.random(rows, "float32") for column in HISTORY_COLUMNS}}
    return features, rng.integers(1, 6, rows).astype("float32")


def replica_step(strategy, users: int, variant: str):
    """The FM of `users` users with the optimizer of `variant` (built under `strategy`), as a replica's training
    step function of `(features, labels)`."""
    import keras
    import tensorflow as tf

    from lakeloop.features import FeatureSpec
    from lakeloop.fm_model import FMHyperParameters, build_fm_model
    from lakeloop.fm_trainer import USER_TABLES, fused_adam, lazy_tables, steps_per_lookup, take_weight_l2

    hparams = FMHyperParameters()
    with strategy.scope():
        model = build_fm_model(FeatureSpec(users, ITEMS, 3.5, 1.0, 5.0), hparams)
        if variant == "keras":
            optimizer = keras.optimizers.Adam(hparams.learning_rate)
        else:
            row_steps = steps_per_lookup(np.full(users, 2 * GLOBAL_BATCH), users)
            lazy_row_steps = lazy_tables(model, USER_TABLES, row_steps) if variant == "lazy" else None
            optimizer = fused_adam(hparams.learning_rate, take_weight_l2(model), lazy_row_steps)
        optimizer.build(model.trainable_variables)

    def step(features, labels) -> None:
        with tf.GradientTape() as tape:
            loss = tf.nn.compute_average_loss(tf.square(labels - model(features, training=True)),
                                              global_batch_size=GLOBAL_BATCH)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables,
                                      strict=True))

    return step


def best_ms_per_step(train_steps, steps: int, repeat: int) -> float:
    """The best of `repeat` timings of `train_steps(steps)` (a `tf.function` of a step count), in ms per step,
    after 5 warm-up steps."""
    import tensorflow as tf

    train_steps(tf.constant(5, tf.int64))
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        train_steps(tf.constant(steps, tf.int64)).numpy()
        best = min(best, (time.perf_counter() - started) / steps * 1000)
    return best


def worker(rank: int, ports: list[int], users: int, steps: int, repeat: int) -> None:
    """One of the two workers: print, on rank 0, the best ms per step of each variant as JSON."""
    strategy = join_cluster(ports, rank)
    import tensorflow as tf

    examples = random_examples(np.random.default_rng(rank), users, GLOBAL_BATCH // len(ports))
    best = {}
    for variant in VARIANTS:
        step = replica_step(strategy, users, variant)

        @tf.function
        def train_steps(count: tf.Tensor, step=step) -> tf.Tensor:
            for _ in tf.range(count):
                strategy.run(step, args=examples)
            return tf.constant(0)

        best[variant] = best_ms_per_step(train_steps, steps, repeat)
    if rank == 0:
        print(json.dumps(best), flush=True)


def measure(users: int, steps: int, repeat: int, module: str = "bench.e2e_train_step") -> dict[str, float]:
    """Start the two workers (`module`'s `--worker` mode) for one vocabulary size; ms per step of each variant."""
    ports = [free_port(), free_port()]
    command = [sys.executable, "-m", module, "--worker", json.dumps(ports), "--users", str(users),
               "--steps", str(steps), "--repeat", str(repeat)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    processes = [subprocess.Popen([*command, "--rank", str(rank)], env=env, stdout=subprocess.PIPE, text=True)
                 for rank in range(2)]
    outputs = [process.communicate()[0] for process in processes]
    if any(process.returncode for process in processes):
        raise RuntimeError(f"a worker failed: {[process.returncode for process in processes]}")
    return json.loads(outputs[0].strip().splitlines()[-1])


def run_workers_or_parse(argv: list[str] | None, doc: str, users: str, steps: int, worker) -> argparse.Namespace | None:
    """A step bench's command line: in a worker process (`--worker`), run `worker` and return None; otherwise
    the parsed `--users`, `--steps`, `--repeat`."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", default=users, help="user vocabulary sizes (%(default)s)")
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # the two ports, in a worker process
    parser.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.rank, json.loads(args.worker), int(args.users), args.steps, args.repeat)
        return None
    return args


def main(argv: list[str] | None = None) -> list[tuple[int, dict[str, float]]]:
    """Print ms per step of both variants and their ratio per user vocabulary size."""
    args = run_workers_or_parse(argv, __doc__, "1200,12000,120000", 200, worker)
    if args is None:
        return []
    results = []
    print("| user rows | Keras Adam, L2 in the loss (ms/step) | dense (ms/step) | lazy (ms/step) | Keras / lazy |"
          " dense / lazy |")
    print("|--:|--:|--:|--:|--:|--:|")
    for users in (int(size) for size in args.users.split(",")):
        best = measure(users, args.steps, args.repeat)
        results.append((users, best))
        print(f"| {users:,} | {best['keras']:.2f} | {best['dense']:.2f} | {best['lazy']:.2f} |"
              f" {best['keras'] / best['lazy']:.1f}× | {best['dense'] / best['lazy']:.1f}× |", flush=True)
    return results


if __name__ == "__main__":
    main()
