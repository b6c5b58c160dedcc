"""How many TensorFlow workers a job gets when the user does not say: one per executor (one per machine on a
local master), whatever the cores. See docs/tfspark.md (workers)."""

from __future__ import annotations

import argparse
import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark import SparkContext

AUTO = "auto"
logger = logging.getLogger("tfspark")


def worker_count(text: str) -> int | None:
    """An argparse type for `--num-workers`: a whole number ≥ 1, or `auto` (None: one per executor)."""
    if text == AUTO:
        return None
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected `auto` or a whole number at least 1, got {text!r}")
    return number


def is_local_master(master: str) -> bool:
    """Whether `master` runs executors inside the driver JVM (`local`, `local[N]`, `local[N,F]`)."""
    return master == "local" or master.startswith("local[")


def resolve_num_workers(requested: int | None, context: SparkContext) -> int:
    """The workers of a job: `requested` if given, else one per executor, logging why.

    A worker uses all the cores of its machine through TensorFlow's own thread pools; a second worker on the same
    machine splits those cores and adds a collective (gradients over loopback gRPC) to every step, so on one
    machine it is slower, not faster.
    """
    if requested is not None:
        logger.info("%d TensorFlow worker(s), as asked", requested)
        return requested
    if is_local_master(context.master):
        logger.info("1 TensorFlow worker: master %s runs on one machine, where one worker uses all %d cores; more "
                    "workers there would add collectives, not arithmetic", context.master, os.cpu_count() or 1)
        return 1
    configured = context.getConf().get("spark.executor.instances")
    executors = int(configured) if configured else context._jsc.sc().getExecutorMemoryStatus().size() - 1
    if executors < 1:
        raise ValueError(f"no executors registered with master {context.master} to count the workers by; "
                         "set spark.executor.instances or --num-workers")
    logger.info("%d TensorFlow workers: one per executor of master %s (%s)", executors, context.master,
                "spark.executor.instances" if configured else "executors registered")
    return executors
