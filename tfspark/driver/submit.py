"""`tfspark-submit --trainer module:Class --num-workers N ...`: build and run the spark-submit command of a
tfspark training job. Options it does not know go to spark-submit unchanged; the master defaults to `local[N]`.
`build_plan` is shared with `TFOnSparkOperator`. See docs/tfspark.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import stat
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

PYTHON_ENV_ALIAS = "environment"

GPU_DISCOVERY_SCRIPT = r"""#!/usr/bin/env bash
# Spark resource discovery: the GPUs nvidia-smi lists, as {"name": "gpu", "addresses": [...]}.
ADDRS=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null \
  | awk 'NF {printf "%s\"%s\"", (n++ ? "," : ""), $1}')
echo "{\"name\": \"gpu\", \"addresses\": [${ADDRS}]}"
"""


@dataclass
class SubmitOptions:
    """The tfspark part of a submission (everything else is plain spark-submit)."""

    trainer: str
    num_workers: int = 1
    gpus_per_worker: int = 0
    checkpoint_dir: str | None = None
    output_dir: str | None = None
    python_env: str | None = None
    trainer_args: dict[str, str] = field(default_factory=dict)
    cache_memory_mb: int | None = None


@dataclass
class SubmitPlan:
    """What spark-submit needs for a tfspark job: conf, archives, application and its arguments."""

    conf: dict[str, str]
    application: str
    application_args: list[str]
    archives: str | None = None

    def command(self, spark_submit: str, master: str, extra_args: list[str] | None = None) -> list[str]:
        """The full spark-submit command line."""
        command = [spark_submit, "--master", master]
        for key, value in self.conf.items():
            command += ["--conf", f"{key}={value}"]
        if self.archives:
            command += ["--archives", self.archives]
        return command + list(extra_args or []) + [self.application, *self.application_args]


def parse_key_values(pairs: list[str]) -> dict[str, str]:
    """["KEY=VALUE", ...] → {KEY: VALUE}; a pair without "=" is an error."""
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {pair!r}")
        parsed[key] = value
    return parsed


def driver_application() -> str:
    """The path of `tfspark/driver/application.py`, the application spark-submit runs."""
    return str(Path(__file__).with_name("application.py"))


def default_spark_submit() -> str:
    """spark-submit from this Python's bin directory (the venv's pyspark), else from PATH."""
    local = Path(sys.executable).parent / "spark-submit"
    return str(local) if local.exists() else "spark-submit"


def gpu_discovery_script() -> str:
    """Write (once) the nvidia-smi discovery script to the temp directory and return its path."""
    path = Path(tempfile.gettempdir()) / f"tfspark-get-gpus-{os.getuid()}.sh"
    if not path.exists() or path.read_text() != GPU_DISCOVERY_SCRIPT:
        partial = path.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(GPU_DISCOVERY_SCRIPT)
        partial.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        partial.replace(path)
    return str(path)


def is_local_master(master: str) -> bool:
    """Whether `master` runs executors inside the driver JVM (`local`, `local[N]`, `local[N,F]`)."""
    return master == "local" or master.startswith("local[")


def build_plan(
    options: SubmitOptions,
    master: str,
    user_conf: dict[str, str] | None = None,
    deploy_mode: str | None = None,
) -> SubmitPlan:
    """The spark-submit pieces for `options` on `master`; keys in `user_conf` are the user's to set.

    Sets: fresh Python workers per task (`spark.python.worker.reuse=false`: TensorFlow's collectives
    cannot be configured twice in one process), the executors' python, no dynamic allocation (barrier
    stages refuse it), and for `--gpus-per-worker G` GPU resources: executor and task amounts on a cluster
    (whose GPU discovery is the cluster's configuration), the driver's amount and an nvidia-smi discovery
    script on a local master, where Spark does not schedule GPUs and the workers split the driver's.
    """
    taken = set(user_conf or {})
    local = is_local_master(master)
    shipped_python = f"./{PYTHON_ENV_ALIAS}/bin/python"
    use_env = bool(options.python_env) and not local
    conf: dict[str, str] = {
        "spark.python.worker.reuse": "false",
        "spark.pyspark.driver.python": shipped_python if use_env and deploy_mode == "cluster" else sys.executable,
        "spark.pyspark.python": shipped_python if use_env else sys.executable,
    }
    if not local:
        conf["spark.dynamicAllocation.enabled"] = "false"
    if options.gpus_per_worker > 0 and local:
        # Spark schedules no GPUs on a local master: the driver discovers them, the workers split them.
        conf["spark.driver.resource.gpu.amount"] = str(options.gpus_per_worker * options.num_workers)
        if "spark.driver.resource.gpu.discoveryScript" not in taken:
            conf["spark.driver.resource.gpu.discoveryScript"] = gpu_discovery_script()
    elif options.gpus_per_worker > 0:
        conf["spark.executor.resource.gpu.amount"] = str(options.gpus_per_worker)
        conf["spark.task.resource.gpu.amount"] = str(options.gpus_per_worker)
    archives = f"{options.python_env}#{PYTHON_ENV_ALIAS}" if options.python_env else None
    return SubmitPlan(
        conf={key: value for key, value in conf.items() if key not in taken},
        application=driver_application(),
        application_args=application_args(options),
        archives=archives,
    )


def application_args(options: SubmitOptions) -> list[str]:
    """The arguments of the driver application (`tfspark/driver/application.py`) for `options`."""
    args = ["--trainer", options.trainer, "--num-workers", str(options.num_workers)]
    if options.gpus_per_worker:
        args += ["--gpus-per-worker", str(options.gpus_per_worker)]
    if options.checkpoint_dir:
        args += ["--checkpoint-dir", options.checkpoint_dir]
    if options.output_dir:
        args += ["--output-dir", options.output_dir]
    if options.cache_memory_mb is not None:
        args += ["--cache-memory-mb", str(options.cache_memory_mb)]
    for key, value in options.trainer_args.items():
        args += ["--trainer-arg", f"{key}={value}"]
    return args


def _parser() -> argparse.ArgumentParser:
    args = argparse.ArgumentParser(
        prog="tfspark-submit",
        description="Run a tfspark trainer on Spark; unknown options go to spark-submit.",
    )
    args.add_argument("--trainer", required=True, help="module:Class of a tfspark.TFSparkTrainer subclass")
    args.add_argument("--num-workers", type=int, default=1, help="TensorFlow workers (barrier tasks)")
    args.add_argument("--gpus-per-worker", type=int, default=0)
    args.add_argument("--checkpoint-dir", help="file:// URL or path; reuse it to resume a run")
    args.add_argument("--output-dir", help="file:// URL or path for model.keras and train_summary.json")
    args.add_argument("--python-env", help="packed venv/conda archive for the executors (venv-pack, conda-pack)")
    args.add_argument("--trainer-arg", action="append", default=[], metavar="KEY=VALUE")
    args.add_argument("--cache-memory-mb", type=int, help="per-worker feed cache in memory before spilling")
    args.add_argument("--spark-submit", default=None, help="spark-submit binary (default: the venv's)")
    args.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    return args


def _split_spark_args(spark_args: list[str]) -> tuple[str | None, dict[str, str], str | None, list[str]]:
    """Read `--master`, `--deploy-mode` and the `--conf` pairs of the pass-through spark-submit options.

    Returns (master, conf, deploy mode, the options minus `--master`).
    """
    master, conf, deploy_mode, rest = None, {}, None, []
    valued = ("--master", "--conf", "--deploy-mode")
    index = 0
    while index < len(spark_args):
        arg = spark_args[index]
        name, has_value, inline = arg.partition("=")
        if name in valued and not has_value:
            if index + 1 >= len(spark_args):
                raise ValueError(f"{arg} needs a value")
            value = spark_args[index + 1]
            index += 2
        elif name in valued:
            value = inline
            index += 1
        else:
            rest.append(arg)
            index += 1
            continue
        if name == "--master":
            master = value
        elif name == "--deploy-mode":
            deploy_mode = value
            rest += ["--deploy-mode", value]
        else:
            key, _, conf_value = value.partition("=")
            conf[key] = conf_value
            rest += ["--conf", value]
    return master, conf, deploy_mode, rest


def _command(parsed: argparse.Namespace, spark_args: list[str]) -> list[str]:
    options = SubmitOptions(
        trainer=parsed.trainer,
        num_workers=parsed.num_workers,
        gpus_per_worker=parsed.gpus_per_worker,
        checkpoint_dir=parsed.checkpoint_dir,
        output_dir=parsed.output_dir,
        python_env=parsed.python_env,
        trainer_args=parse_key_values(parsed.trainer_arg),
        cache_memory_mb=parsed.cache_memory_mb,
    )
    master, user_conf, deploy_mode, rest = _split_spark_args(spark_args)
    master = master or f"local[{options.num_workers}]"
    plan = build_plan(options, master, user_conf, deploy_mode or user_conf.get("spark.submit.deployMode"))
    return plan.command(parsed.spark_submit or default_spark_submit(), master, rest)


def build_command(argv: list[str]) -> list[str]:
    """The spark-submit command `tfspark-submit argv` runs."""
    return _command(*_parser().parse_known_args(argv))


def main(argv: list[str] | None = None) -> int:
    """Console entry point: print the spark-submit command and become it (signals and exit code included)."""
    parsed, spark_args = _parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    command = _command(parsed, spark_args)
    if parsed.dry_run:
        print(shlex.join(command))
        return 0
    print("tfspark-submit: " + shlex.join(command), file=sys.stderr, flush=True)
    env = dict(os.environ, PYSPARK_PYTHON=os.environ.get("PYSPARK_PYTHON", sys.executable))
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    sys.exit(main())
