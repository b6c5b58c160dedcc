"""The set-up of the training-step benchmarks: two worker processes on 127.0.0.1 under `MultiWorkerMirroredStrategy`,
each with its share of a global batch of random FM inputs, timing a replica's training step of the FM of
`lakeloop.fm_model` (default hyper-parameters) with the trainer's optimizers. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from bench.harness import child_environment, last_json_line, module_command, parse_sizes, table_header, table_row
from lakeloop.services import free_port

if TYPE_CHECKING:
    import tensorflow as tf

ITEMS = 1683  # MovieLens 100K's movies + the OOV index
GLOBAL_BATCH = 256
Worker = Callable[[int, list[int], int, int, int], None]  # (rank, ports, users, steps, repeat)


def join_cluster(ports: list[int], rank: int) -> tf.distribute.MultiWorkerMirroredStrategy:
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


def replica_step(strategy: tf.distribute.Strategy, users: int, variant: str) -> Callable[[dict, tf.Tensor], None]:
    """The FM of `users` users with the optimizer of `variant` (built under `strategy`), as a replica's training
    step function of `(features, labels)`."""
    import keras
    import tensorflow as tf

    from lakeloop.features import FeatureSpec
    from lakeloop.fm_model import FMHyperParameters, build_fm_model
    from lakeloop.fm_trainer import USER_TABLES, fused_adam, lazy_tables, take_weight_l2

    hparams = FMHyperParameters()
    with strategy.scope():
        model = build_fm_model(FeatureSpec(users, ITEMS, 3.5, 1.0, 5.0), hparams)
        if variant == "keras":
            optimizer = keras.optimizers.Adam(hparams.learning_rate)
        else:
            lazy_paths = lazy_tables(model, USER_TABLES) if variant == "lazy" else set()
            optimizer = fused_adam(hparams.learning_rate, take_weight_l2(model),
                                   [variable.path in lazy_paths for variable in model.trainable_variables])
        optimizer.build(model.trainable_variables)

    def step(features, labels) -> None:
        with tf.GradientTape() as tape:
            rating = model(features, training=True)["rating"]
            loss = tf.nn.compute_average_loss(tf.square(labels - rating), global_batch_size=GLOBAL_BATCH)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables,
                                      strict=True))

    return step


def best_ms_per_step(train_steps: Callable[[tf.Tensor], tf.Tensor], steps: int, repeat: int) -> float:
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


def measure(users: int, steps: int, repeat: int, module: str) -> dict[str, float]:
    """Start the two workers (benchmark `module`'s `--worker` mode) for one vocabulary size; the JSON line worker 0
    prints (ms per step of each variant)."""
    ports = [free_port(), free_port()]
    command = module_command(module, "--worker", json.dumps(ports), "--users", str(users), "--steps", str(steps),
                             "--repeat", str(repeat))
    env = child_environment(TF_CPP_MIN_LOG_LEVEL="2")
    processes = [subprocess.Popen([*command, "--rank", str(rank)], env=env, stdout=subprocess.PIPE, text=True)
                 for rank in range(2)]
    outputs = [process.communicate()[0] for process in processes]
    if any(process.returncode for process in processes):
        raise RuntimeError(f"a worker failed: {[process.returncode for process in processes]}")
    return last_json_line(outputs[0])


def run_workers_or_parse(argv: list[str] | None, doc: str, users: str, steps: int,
                         worker: Worker) -> argparse.Namespace | None:
    """A step benchmark's command line: in a worker process (`--worker`), run `worker` and return None; otherwise
    the parsed `--users` (sizes, comma-separated), `--steps`, `--repeat`."""
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




def measure_sizes(args: argparse.Namespace, module: str, columns: list[str],
                  row: Callable[[dict[str, float]], list[str]]) -> list[tuple[int, dict[str, float]]]:
    """`measure` each of `args.users` with benchmark `module`'s workers, printing a markdown table as it goes: the
    user rows, then `columns` (`row` makes their cells from a size's ms per step); each size's ms per step."""
    print("\n".join(table_header(["user rows", *columns], "r" * (len(columns) + 1))), flush=True)
    results = []
    for users in parse_sizes(args.users):
        best = measure(users, args.steps, args.repeat, module)
        results.append((users, best))
        print(table_row([f"{users:,}", *row(best)]), flush=True)
    return results
