"""The environment of Airflow and its task processes: TensorFlow's CUDA probing errors are silenced only when no
GPU is configured. The end-to-end check that no `cuInit` line reaches a task log is in test_run_e2e.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lakeloop.airflow_env import airflow_environment, airflow_pools
from lakeloop.config import load_settings

SETTINGS = load_settings({})
TF_IMPORT = "import tensorflow as tf; tf.config.list_physical_devices()"


@pytest.mark.parametrize(("extra", "level"), [
    ({}, "3"),
    ({"LAKELOOP_GPUS_PER_WORKER": "0"}, "3"),
    ({"LAKELOOP_GPUS_PER_WORKER": "1"}, "2"),
    ({"CUDA_VISIBLE_DEVICES": "0"}, "2"),
    ({"CUDA_VISIBLE_DEVICES": ""}, "3"),
    ({"TF_CPP_MIN_LOG_LEVEL": "0"}, "0"),
])
def test_tensorflow_errors_are_silenced_only_without_gpus(extra, level):
    base = {"PATH": "/usr/bin", **extra}
    assert airflow_environment(load_settings(base), base=base)["TF_CPP_MIN_LOG_LEVEL"] == level


def test_the_gpu_pools_slots_come_from_the_settings():
    assert airflow_pools(SETTINGS)["gpu_pool"][0] == 1
    assert airflow_pools(load_settings({"LAKELOOP_GPU_POOL_SLOTS": "4"}))["gpu_pool"][0] == 4
    assert airflow_pools(SETTINGS)["spark_pool"][0] == 2


def test_a_tensorflow_process_of_a_cpu_only_set_up_prints_no_cuda_error():
    env = airflow_environment(SETTINGS, base={"PATH": "/usr/bin", "HOME": "/tmp"})
    stderr = subprocess.run([sys.executable, "-c", TF_IMPORT], env=env, capture_output=True, text=True,
                            check=True).stderr
    assert "cuInit" not in stderr and "E0000" not in stderr, stderr
