"""The spark-submit application of tfspark (what `tfspark-submit` and `TFOnSparkOperator` submit): load the
trainer, open the SparkSession, run the job; print the summary as one `TFSPARK_SUMMARY {...}` line on stdout.
Any failure exits non-zero after `shutdown` has run. See docs/tfspark.md.
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    # Run as a script, Python put tfspark/driver/ itself first on sys.path; a user module named like one of
    # ours ("runner", "submit"...) must not resolve to tfspark's.
    sys.path.pop(0)

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import tempfile  # noqa: E402

from tfspark.config import DEFAULT_CACHE_MEMORY_BYTES, RunConfig  # noqa: E402
from tfspark.driver.runner import run_trainer, shutdown_trainer  # noqa: E402
from tfspark.driver.submit import add_checkpoint_arguments, parse_key_values, trainer_class  # noqa: E402
from tfspark.driver.workers import worker_count  # noqa: E402
from tfspark.trainer import TFSparkTrainer  # noqa: E402

SUMMARY_PREFIX = "TFSPARK_SUMMARY "


def load_trainer(spec: str, trainer_args: dict[str, str]) -> TFSparkTrainer:
    """Import `module:Class` and instantiate it with the trainer args."""
    return trainer_class(spec)(**trainer_args)


def parser() -> argparse.ArgumentParser:
    """The driver's command line (what `tfspark-submit` passes after the application path)."""
    args = argparse.ArgumentParser(prog="tfspark driver", description=__doc__)
    args.add_argument("--trainer", required=True, help="module:Class of a TFSparkTrainer subclass")
    args.add_argument("--num-workers", type=worker_count, default=None, help="a number, or auto (one per executor)")
    args.add_argument("--gpus-per-worker", type=int, default=0)
    args.add_argument("--checkpoint-dir", help="file:// URL or path (default: <output-dir>/checkpoints)")
    args.add_argument("--output-dir", help="file:// URL or path (default: a new temporary directory)")
    add_checkpoint_arguments(args)
    args.add_argument("--trainer-arg", action="append", default=[], metavar="KEY=VALUE")
    args.add_argument("--cache-memory-mb", type=int, default=DEFAULT_CACHE_MEMORY_BYTES // 2**20)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run one training job; return the process exit code."""
    options = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    trainer = load_trainer(options.trainer, parse_key_values(options.trainer_arg))
    output_dir = options.output_dir or tempfile.mkdtemp(prefix="tfspark-")
    config = RunConfig(
        checkpoint_dir=options.checkpoint_dir or os.path.join(output_dir, "checkpoints"),
        output_dir=output_dir,
        num_workers=options.num_workers,
        gpus_per_worker=options.gpus_per_worker,
        checkpoint_every=options.checkpoint_every,
        checkpoint_seconds=options.checkpoint_seconds,
        cache_memory_bytes=options.cache_memory_mb * 2**20,
        trainer_name=options.trainer,
    )
    try:
        from pyspark import SparkConf
        from pyspark.sql import SparkSession

        builder = SparkSession.builder
        script = os.path.basename(__file__)
        if SparkConf().get("spark.app.name", script) == script:
            # spark-submit names an unnamed application after its script; name it after the trainer.
            builder = builder.appName(f"tfspark {options.trainer}")
        spark = builder.getOrCreate()
    except BaseException:
        shutdown_trainer(trainer)
        raise
    try:
        summary = run_trainer(spark, trainer, config)
    finally:
        spark.stop()
    print(SUMMARY_PREFIX + json.dumps(summary, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
