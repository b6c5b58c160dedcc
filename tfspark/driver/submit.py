"""`tfspark-submit --trainer module:Class --num-workers N ...`: build and run the spark-submit command of a
tfspark training job. spark-submit's own options go to it unchanged, anything after `--` too; the master defaults
to `local[N]` (`local[*]` with `--num-workers auto`, the default). `build_plan` is shared with
`TFOnSparkOperator`. See docs/tfspark.md.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import shlex
import stat
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tfspark.driver.workers import AUTO, is_local_master, worker_count

PYTHON_ENV_ALIAS = "environment"

# The options of spark-submit (Spark 4's `spark-submit --help`) that fit a tfspark job, with and without a value;
# `--kill`, `--status`, `--help` and `--version` make spark-submit do something else than run the job.
SPARK_SUBMIT_VALUED_OPTIONS = frozenset({
    "--master", "--deploy-mode", "--class", "--name", "--jars", "--packages", "--exclude-packages",
    "--repositories", "--py-files", "--files", "--archives", "--conf", "--properties-file", "--driver-memory",
    "--driver-java-options", "--driver-library-path", "--driver-class-path", "--executor-memory", "--proxy-user",
    "--remote", "--driver-cores", "--total-executor-cores", "--executor-cores", "--num-executors", "--principal",
    "--keytab", "--queue",
})
SPARK_SUBMIT_SWITCHES = frozenset({"--verbose", "--supervise", "--load-spark-defaults"})
SPARK_SUBMIT_SHORT_FORMS = {"-c": "--conf", "-v": "--verbose"}

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
    num_workers: int | None = None
    gpus_per_worker: int = 0
    checkpoint_dir: str | None = None
    output_dir: str | None = None
    python_env: str | None = None
    trainer_args: dict[str, str] = field(default_factory=dict)
    cache_memory_mb: int | None = None
    checkpoint_every: int | None = None
    checkpoint_seconds: float | None = None


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
        conf["spark.driver.resource.gpu.amount"] = str(options.gpus_per_worker * (options.num_workers or 1))
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
    args = ["--trainer", options.trainer, "--num-workers", str(options.num_workers or AUTO)]
    if options.gpus_per_worker:
        args += ["--gpus-per-worker", str(options.gpus_per_worker)]
    if options.checkpoint_dir:
        args += ["--checkpoint-dir", options.checkpoint_dir]
    if options.output_dir:
        args += ["--output-dir", options.output_dir]
    if options.cache_memory_mb is not None:
        args += ["--cache-memory-mb", str(options.cache_memory_mb)]
    if options.checkpoint_every is not None:
        args += ["--checkpoint-every", str(options.checkpoint_every)]
    if options.checkpoint_seconds is not None:
        args += ["--checkpoint-seconds", f"{options.checkpoint_seconds:g}"]
    for key, value in options.trainer_args.items():
        args += ["--trainer-arg", f"{key}={value}"]
    return args


def trainer_class(spec: str) -> type:
    """Import the `module:Class` a job names and check it is a `TFSparkTrainer` subclass: what the driver runs,
    and what `tfspark-submit --dry-run` checks before printing the command."""
    from tfspark.trainer import TFSparkTrainer

    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        raise ValueError(f"--trainer must look like module:Class, got {spec!r}")
    found = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(found, type) and issubclass(found, TFSparkTrainer)):
        raise TypeError(f"{spec} is not a subclass of tfspark.TFSparkTrainer")
    return found


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `minimum` (anything else is argparse's usage error)."""

    def parse(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            number = minimum - 1
        if number < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number at least {minimum}, got {text!r}")
        return number

    return parse


def positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds above 0."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text!r}")
    return seconds


def add_checkpoint_arguments(args: argparse.ArgumentParser) -> None:
    """`--checkpoint-every` and `--checkpoint-seconds`, shared by `tfspark-submit` and the driver application."""
    args.add_argument("--checkpoint-every", type=whole_number(1), metavar="STEPS",
                      help="save a checkpoint every STEPS steps (default: the trainer's checkpoint_every)")
    args.add_argument("--checkpoint-seconds", type=positive_seconds, metavar="SECONDS",
                      help="also save one when SECONDS passed since the last (default: the trainer's "
                           "checkpoint_seconds, else off)")


def _parser() -> argparse.ArgumentParser:
    args = argparse.ArgumentParser(
        prog="tfspark-submit",
        description="Run a tfspark trainer on Spark. spark-submit's own options (--master, --conf, "
                    "--driver-memory...) go to it; so does anything after `--`, unchecked.",
        allow_abbrev=False,
    )
    args.add_argument("--trainer", required=True, help="module:Class of a tfspark.TFSparkTrainer subclass")
    args.add_argument("--num-workers", type=worker_count, default=None,
                      help="TensorFlow workers (barrier tasks): a number, or auto (default: one per executor, so one "
                           "on a local master)")
    args.add_argument("--gpus-per-worker", type=whole_number(0), default=0)
    args.add_argument("--checkpoint-dir", help="file:// URL or path; reuse it to resume a run")
    args.add_argument("--output-dir", help="file:// URL or path for model.keras and train_summary.json")
    add_checkpoint_arguments(args)
    args.add_argument("--python-env", help="packed venv/conda archive for the executors (venv-pack, conda-pack)")
    args.add_argument("--trainer-arg", action="append", default=[], metavar="KEY=VALUE")
    args.add_argument("--cache-memory-mb", type=int, help="per-worker feed cache in memory before spilling")
    args.add_argument("--spark-submit", default=None, help="spark-submit binary (default: the venv's)")
    args.add_argument("--dry-run", action="store_true",
                      help="import the trainer and print the command instead of running it")
    return args


class UnknownOption(ValueError):
    """An argument before `--` that is neither tfspark-submit's nor spark-submit's."""

    def __init__(self, arg: str, known: list[str]) -> None:
        close = difflib.get_close_matches(arg.partition("=")[0], known, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        super().__init__(f"unrecognized argument {arg!r}: neither a tfspark-submit option nor a spark-submit one; "
                         f"{hint}put spark-submit arguments tfspark-submit does not know after `--`")


def _split_spark_args(spark_args: list[str]) -> tuple[str | None, dict[str, str], str | None, list[str]]:
    """Check and read the pass-through spark-submit options: `--master`, `--deploy-mode` and the `--conf` pairs.

    Returns (master, conf, deploy mode, the options minus `--master`); an option spark-submit does not know raises
    `UnknownOption`, one without its value ValueError.
    """
    master, conf, deploy_mode, rest = None, {}, None, []
    index = 0
    while index < len(spark_args):
        arg = spark_args[index]
        name, has_value, inline = arg.partition("=")
        name = SPARK_SUBMIT_SHORT_FORMS.get(name, name)
        if name in SPARK_SUBMIT_SWITCHES and not has_value:
            rest.append(name)
            index += 1
            continue
        if name not in SPARK_SUBMIT_VALUED_OPTIONS:
            tfspark_options = [option for action in _parser()._actions for option in action.option_strings]
            raise UnknownOption(arg, [*tfspark_options, *SPARK_SUBMIT_VALUED_OPTIONS, *SPARK_SUBMIT_SWITCHES])
        if has_value:
            value = inline
            index += 1
        elif index + 1 < len(spark_args):
            value = spark_args[index + 1]
            index += 2
        else:
            raise ValueError(f"{arg} needs a value")
        if name == "--master":
            master = value
            continue
        if name == "--deploy-mode":
            deploy_mode = value
        elif name == "--conf":
            key, _, conf_value = value.partition("=")
            conf[key] = conf_value
        rest += [name, value]
    return master, conf, deploy_mode, rest


def _command(parsed: argparse.Namespace, spark_args: list[str], verbatim: list[str]) -> list[str]:
    options = SubmitOptions(
        trainer=parsed.trainer,
        num_workers=parsed.num_workers,
        gpus_per_worker=parsed.gpus_per_worker,
        checkpoint_dir=parsed.checkpoint_dir,
        output_dir=parsed.output_dir,
        python_env=parsed.python_env,
        trainer_args=parse_key_values(parsed.trainer_arg),
        cache_memory_mb=parsed.cache_memory_mb,
        checkpoint_every=parsed.checkpoint_every,
        checkpoint_seconds=parsed.checkpoint_seconds,
    )
    master, user_conf, deploy_mode, rest = _split_spark_args(spark_args)
    master = master or f"local[{options.num_workers or '*'}]"
    plan = build_plan(options, master, user_conf, deploy_mode or user_conf.get("spark.submit.deployMode"))
    return plan.command(parsed.spark_submit or default_spark_submit(), master, rest + verbatim)


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The parsed options and the spark-submit command of `tfspark-submit argv`; a bad argument exits with
    argparse's usage error (status 2)."""
    parser = _parser()
    checked, verbatim = _split_at_double_dash(argv)
    parsed, spark_args = parser.parse_known_args(checked)
    try:
        return parsed, _command(parsed, spark_args, verbatim)
    except ValueError as error:
        parser.error(str(error))


def _split_at_double_dash(argv: list[str]) -> tuple[list[str], list[str]]:
    """The arguments before the first `--` (checked) and after it (passed to spark-submit as they are)."""
    index = argv.index("--") if "--" in argv else len(argv)
    return argv[:index], argv[index + 1:]


def build_command(argv: list[str]) -> list[str]:
    """The spark-submit command `tfspark-submit argv` runs."""
    return _parse(argv)[1]


def main(argv: list[str] | None = None) -> int:
    """Console entry point: print the spark-submit command and become it (signals and exit code included)."""
    parsed, command = _parse(sys.argv[1:] if argv is None else argv)
    if parsed.dry_run:
        try:
            trainer_class(parsed.trainer)
        except (ImportError, AttributeError, ValueError, TypeError) as error:
            _parser().error(f"--trainer {parsed.trainer}: {error}")
        print(shlex.join(command))
        return 0
    print("tfspark-submit: " + shlex.join(command), file=sys.stderr, flush=True)
    env = dict(os.environ, PYSPARK_PYTHON=os.environ.get("PYSPARK_PYTHON", sys.executable))
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    sys.exit(main())
