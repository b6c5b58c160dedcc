"""The FM's training step at growing user vocabularies: Keras' Adam against the trainer's fused Adam.

The end-to-end bench (`bench.e2e`) found `train_model` slowing down per example as the day grows: the users
of a day, hence the rows of the user tables, grow with it, and a step's cost grows with the tables (the L2
on whole tables makes every gradient dense, so each step updates every row and its two moments). This times
one process's step (batch 256, the FM of `jobs.fm_model` with its default hyper-parameters, random inputs),
both optimizers side by side per vocabulary size, best of `--repeat` rounds of `--steps` steps each:

  keras   `keras.optimizers.Adam` on the loss with the L2 penalty (about ten element-wise operations per
          variable, each a new tensor)
  fused   the trainer's `take_weight_l2` and `fused_adam` (the L2 gradient added in the optimizer, TensorFlow's
          in-place `ResourceApplyAdam`: the same update)

One process has no all-reduce; in the DAG's two workers the fused variant also keeps the summed gradients
sparse (the batch's rows only), which this does not show.

    .venv/bin/python -m bench.e2e_train_step
    .venv/bin/python -m bench.e2e_train_step --users 1300,130000 --steps 100
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from jobs.feature_spec import GENRES, HISTORY_COLUMNS, FeatureSpec
from jobs.fm_model import FMHyperParameters, build_fm_model

ITEMS = 1683  # MovieLens 100K's movies + the OOV index
BATCH = 256


def step_seconds(users: int, fused: bool, steps: int, repeat: int) -> float:
    """Best seconds per training step of a fresh FM with `users` user rows, with Keras' or the fused Adam."""
    import keras
    import tensorflow as tf

    from jobs.fm_trainer import fused_adam, take_weight_l2

    hparams = FMHyperParameters()
    model = build_fm_model(FeatureSpec(users, ITEMS, 3.5, 1.0, 5.0), hparams)
    optimizer = (fused_adam(hparams.learning_rate, take_weight_l2(model)) if fused
                 else keras.optimizers.Adam(hparams.learning_rate))
    rng = np.random.default_rng(0)
    features = {"user_idx": rng.integers(0, users, BATCH), "item_idx": rng.integers(0, ITEMS, BATCH),
                "year_idx": rng.integers(0, 22, BATCH), "genres": rng.random((BATCH, len(GENRES)), "float32"),
                **{column: rng.random(BATCH, "float32") for column in HISTORY_COLUMNS}}
    labels = rng.integers(1, 6, BATCH).astype("float32")

    @tf.function
    def train_steps(count: tf.Tensor) -> tf.Tensor:
        loss = tf.constant(0.0)
        for _ in tf.range(count):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(labels - model(features, training=True)))
                if model.losses:
                    loss += tf.add_n(model.losses)
            optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables,
                                          strict=True))
        return loss

    train_steps(tf.constant(5, tf.int64))
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        train_steps(tf.constant(steps, tf.int64)).numpy()
        best = min(best, (time.perf_counter() - started) / steps)
    return best


def main(argv: list[str] | None = None) -> list[tuple[int, float, float]]:
    """Print ms per step of both optimizers and their ratio per user vocabulary size; return (users, keras, fused)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", default="1300,13000,130000", help="user vocabulary sizes (%(default)s)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    rows = []
    print("| user rows | Keras Adam ms/step | fused Adam ms/step | Keras / fused |\n|--:|--:|--:|--:|")
    for users in (int(size) for size in args.users.split(",")):
        keras_s = step_seconds(users, False, args.steps, args.repeat)
        fused_s = step_seconds(users, True, args.steps, args.repeat)
        rows.append((users, keras_s, fused_s))
        print(f"| {users:,} | {keras_s * 1000:.2f} | {fused_s * 1000:.2f} | {keras_s / fused_s:.1f}× |", flush=True)
    return rows


if __name__ == "__main__":
    main()
