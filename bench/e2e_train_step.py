"""The FM's training step on two workers at growing user vocabularies: Keras' Adam against the trainer's optimizer,
with the user tables updated densely and lazily (why `train_model` slowed down per example as the day grew).

    .venv/bin/python -m bench.e2e_train_step --users 12000,120000 --steps 100

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

VARIANTS = ("keras", "dense", "lazy")


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
        print_json_line(best)


def main(argv: list[str] | None = None) -> list[tuple[int, dict[str, float]]]:
    """Print ms per step of both variants and their ratio per user vocabulary size."""
    args = run_workers_or_parse(argv, __doc__, "1200,12000,120000", 200, worker)
    if args is None:
        return []
    return measure_sizes(
        args, "bench.e2e_train_step",
        ["Keras Adam, L2 in the loss (ms/step)", "dense (ms/step)", "lazy (ms/step)", "Keras / lazy", "dense / lazy"],
        lambda best: [f"{best['keras']:.2f}", f"{best['dense']:.2f}", f"{best['lazy']:.2f}",
                      f"{best['keras'] / best['lazy']:.1f}×", f"{best['dense'] / best['lazy']:.1f}×"])


if __name__ == "__main__":
    main()
