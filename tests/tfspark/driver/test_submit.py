"""`tfspark-submit`: the spark-submit command it builds for each kind of master and option."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tfspark.driver.submit import (
    SubmitOptions,
    build_command,
    build_plan,
    driver_application,
    gpu_discovery_script,
    main,
    parse_key_values,
)

VENV_BIN = Path(sys.executable).parent


def conf_of(command: list[str]) -> dict[str, str]:
    """The `--conf key=value` pairs of a spark-submit command."""
    pairs = [command[i + 1] for i, arg in enumerate(command) if arg == "--conf"]
    return dict(pair.split("=", 1) for pair in pairs)


def test_default_command_runs_the_driver_on_local_n_with_the_venv_python():
    command = build_command(["--trainer", "lakeloop.fm_trainer:FMTrainer", "--num-workers", "2"])
    assert command[0] == str(VENV_BIN / "spark-submit")
    assert command[1:3] == ["--master", "local[2]"]
    assert conf_of(command) == {
        "spark.python.worker.reuse": "false",
        "spark.pyspark.driver.python": sys.executable,
        "spark.pyspark.python": sys.executable,
    }
    application = command.index(driver_application())
    assert command[application:] == [
        driver_application(),
        "--trainer",
        "lakeloop.fm_trainer:FMTrainer",
        "--num-workers",
        "2",
    ]


def test_tfspark_options_go_to_the_driver_and_the_rest_to_spark_submit():
    command = build_command(
        [
            "--trainer", "m:T", "--num-workers", "2",
            "--master", "local[2,3]",
            "--checkpoint-dir", "file:///lake/checkpoints/fm/run1",
            "--output-dir", "file:///lake/models/fm/dt=2026-11-20",
            "--trainer-arg", "day=2026-11-20", "--trainer-arg", "expr=a=b",
            "--driver-memory", "2g",
            "--conf", "spark.pyspark.python=/opt/py/bin/python",
            "--cache-memory-mb", "64",
            "--checkpoint-every", "500", "--checkpoint-seconds", "90.5",
        ]
    )  # fmt: skip
    assert command[1:3] == ["--master", "local[2,3]"]
    assert command.count("--master") == 1
    assert conf_of(command)["spark.pyspark.python"] == "/opt/py/bin/python", "the user's conf wins"
    assert list(conf_of(command).values()).count("/opt/py/bin/python") == 1
    spark_part = command[: command.index(driver_application())]
    assert spark_part[spark_part.index("--driver-memory") + 1] == "2g"
    driver_args = command[command.index(driver_application()) + 1 :]
    assert driver_args == [
        "--trainer", "m:T", "--num-workers", "2",
        "--checkpoint-dir", "file:///lake/checkpoints/fm/run1",
        "--output-dir", "file:///lake/models/fm/dt=2026-11-20",
        "--cache-memory-mb", "64",
        "--checkpoint-every", "500", "--checkpoint-seconds", "90.5",
        "--trainer-arg", "day=2026-11-20", "--trainer-arg", "expr=a=b",
    ]  # fmt: skip


def test_gpus_are_task_resources_on_a_cluster():
    command = build_command(
        ["--trainer", "m:T", "--num-workers", "4", "--gpus-per-worker", "2", "--master", "spark://head:7077"]
    )
    conf = conf_of(command)
    assert conf["spark.executor.resource.gpu.amount"] == "2"
    assert conf["spark.task.resource.gpu.amount"] == "2"
    assert conf["spark.dynamicAllocation.enabled"] == "false", "barrier stages refuse dynamic allocation"
    assert "spark.driver.resource.gpu.amount" not in conf
    driver_args = command[command.index(driver_application()) + 1 :]
    assert driver_args[driver_args.index("--gpus-per-worker") + 1] == "2"


def test_gpus_are_the_drivers_on_a_local_master_where_spark_schedules_none():
    conf = conf_of(build_command(["--trainer", "m:T", "--num-workers", "2", "--gpus-per-worker", "1"]))
    assert conf["spark.driver.resource.gpu.amount"] == "2"
    assert conf["spark.driver.resource.gpu.discoveryScript"] == gpu_discovery_script()
    assert "spark.task.resource.gpu.amount" not in conf


def test_python_env_ships_the_archive_and_executors_use_its_python():
    options = SubmitOptions(trainer="m:T", num_workers=2, python_env="hdfs:///envs/tf.tar.gz")
    plan = build_plan(options, "yarn")
    assert plan.archives == "hdfs:///envs/tf.tar.gz#environment"
    assert plan.conf["spark.pyspark.python"] == "./environment/bin/python"
    assert plan.conf["spark.pyspark.driver.python"] == sys.executable, "client mode: the driver runs here"
    cluster_plan = build_plan(options, "yarn", deploy_mode="cluster")
    assert cluster_plan.conf["spark.pyspark.driver.python"] == "./environment/bin/python"
    command = cluster_plan.command("spark-submit", "yarn")
    assert command[command.index("--archives") + 1] == "hdfs:///envs/tf.tar.gz#environment"
    local_plan = build_plan(options, "local[2]")
    assert local_plan.conf["spark.pyspark.python"] == sys.executable, "local executors are this process"


def test_trainer_args_must_be_key_value_pairs():
    assert parse_key_values(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_key_values(["novalue"])


def test_the_default_gpu_discovery_script_reports_what_nvidia_smi_lists(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    nvidia_smi = fake_bin / "nvidia-smi"
    nvidia_smi.write_text("#!/bin/sh\nprintf '0\\n1\\n'\n")
    nvidia_smi.chmod(0o755)
    script = gpu_discovery_script()
    with_gpus = subprocess.run(
        [script], capture_output=True, text=True, check=True, env={**os.environ, "PATH": f"{fake_bin}:/usr/bin:/bin"}
    )
    assert json.loads(with_gpus.stdout) == {"name": "gpu", "addresses": ["0", "1"]}
    without = subprocess.run([script], capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"})
    assert json.loads(without.stdout) == {"name": "gpu", "addresses": []}


def test_dry_run_prints_the_command_it_would_run(capsys):
    assert main(["--trainer", "tiny_trainer:TinyRatingsTrainer", "--dry-run"]) == 0
    printed = shlex.split(capsys.readouterr().out)
    assert printed == build_command(["--trainer", "tiny_trainer:TinyRatingsTrainer"])


def test_the_console_script_is_installed_and_answers():
    usage = subprocess.run(
        [str(VENV_BIN / "tfspark-submit"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--num-workers" in usage and "--gpus-per-worker" in usage and "--python-env" in usage


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [("--num-workers", "0", "`auto` or a whole number at least 1"),
     ("--num-workers", "-2", "`auto` or a whole number at least 1"),
     ("--num-workers", "two", "`auto` or a whole number at least 1"),
     ("--gpus-per-worker", "-1", "a whole number at least 0"),
     ("--checkpoint-every", "0", "a whole number at least 1"),
     ("--checkpoint-seconds", "0", "a number of seconds above 0"),
     ("--checkpoint-seconds", "inf", "a number of seconds above 0")],
)
def test_worker_and_gpu_counts_out_of_range_are_refused(capsys, option, value, expected):
    with pytest.raises(SystemExit) as exit_:
        build_command(["--trainer", "m:T", option, value])
    assert exit_.value.code == 2
    assert f"error: argument {option}: expected {expected}, got {value!r}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "unknown", "hint"),
    [(["--num-worker", "2"], "--num-worker", "did you mean --num-workers?"),
     (["--driver-memroy", "2g"], "--driver-memroy", "did you mean --driver-memory?"),
     (["--checkpoint-dri=/tmp/c"], "--checkpoint-dri=/tmp/c", "did you mean --checkpoint-dir?"),
     (["--num-workers", "2", "3"], "3", "")],
)
def test_an_option_neither_tfspark_submit_nor_spark_submit_knows_is_refused(capsys, argv, unknown, hint):
    with pytest.raises(SystemExit) as exit_:
        main(["--trainer", "m:T", *argv, "--dry-run"])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert f"error: unrecognized argument {unknown!r}" in error and hint in error
    assert "after `--`" in error


def test_spark_submit_options_pass_with_their_values_and_anything_after_a_double_dash_verbatim():
    command = build_command(
        ["--trainer", "m:T", "--name", "nightly", "-c", "spark.x=1", "--verbose", "--driver-java-options",
         "-Dlog4j.debug=true", "--num-workers", "2", "--", "--future-spark-option", "v"]
    )
    spark_part = command[: command.index(driver_application())]
    assert "--verbose" in spark_part
    assert spark_part[spark_part.index("--name") + 1] == "nightly"
    assert conf_of(command)["spark.x"] == "1", "-c is --conf"
    assert spark_part[spark_part.index("--driver-java-options") + 1] == "-Dlog4j.debug=true"
    assert spark_part[-2:] == ["--future-spark-option", "v"]
    assert command[command.index(driver_application()) + 1 :][:4] == ["--trainer", "m:T", "--num-workers", "2"]


def test_a_spark_submit_option_without_its_value_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_command(["--trainer", "m:T", "--driver-memory"])
    assert exit_.value.code == 2
    assert "error: --driver-memory needs a value" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("trainer", "problem"),
    [("no_such_module:Trainer", "No module named 'no_such_module'"),
     ("tiny_trainer:TinyRatingsTrainr", "has no attribute 'TinyRatingsTrainr'"),
     ("pathlib:Path", "is not a subclass of tfspark.TFSparkTrainer"),
     ("tiny_trainer.TinyRatingsTrainer", "must look like module:Class")],
)
def test_a_dry_run_imports_the_trainer_so_a_wrong_one_fails_it(capsys, trainer, problem):
    with pytest.raises(SystemExit) as exit_:
        main(["--trainer", trainer, "--dry-run"])
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"error: --trainer {trainer}: " in captured.err and problem in captured.err
