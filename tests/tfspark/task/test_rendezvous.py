"""Rendezvous pieces: GPUs per task, TF_CONFIG, equal step plans."""

from __future__ import annotations

import errno
import json
import os
import socket

import pytest
from pyspark.resource import ResourceInformation

from tfspark.task.rendezvous import (
    WorkerInfo,
    assign_gpus,
    plan_steps,
    reserve_port,
    set_tf_config,
    task_host,
    tf_config,
    visible_gpus,
)


def gpu(*addresses: str) -> ResourceInformation:
    """What `TaskContext.resources()["gpu"]` holds."""
    return ResourceInformation("gpu", list(addresses))


def test_a_task_sees_exactly_the_gpus_spark_assigned_it():
    assert visible_gpus({"gpu": gpu("3")}, 1) == "3"
    assert visible_gpus({"gpu": gpu("0", "2")}, 2, rank=1, local_gpus=("5", "6", "7", "8")) == "0,2"


def test_on_a_local_master_workers_split_the_driver_gpus_by_rank():
    local = ("0", "1", "2", "3")
    assert [visible_gpus({}, 2, rank, local) for rank in (0, 1)] == ["0,1", "2,3"]
    with pytest.raises(RuntimeError, match="asked for 2 GPU"):
        visible_gpus({}, 2, rank=2, local_gpus=local)


def test_cpu_only_tasks_see_no_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert assign_gpus({"gpu": gpu("0")}, 0) == ""
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""


def test_tf_config_names_every_worker_and_this_task():
    addresses = ["127.0.0.1:4001", "127.0.0.1:4002"]
    assert tf_config(addresses, 1) == {
        "cluster": {"worker": addresses},
        "task": {"type": "worker", "index": 1},
    }


def test_set_tf_config_only_for_several_workers(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "stale")
    set_tf_config(["h:1", "h:2"], 0)
    assert json.loads(os.environ["TF_CONFIG"])["task"]["index"] == 0
    set_tf_config(["h:1"], 0)
    assert "TF_CONFIG" not in os.environ


def test_every_worker_runs_ceil_rows_over_global_batch_steps_whatever_its_share():
    plan = plan_steps([98, 1403], global_batch_size=64, epochs=4)
    assert (plan.per_worker_batch_size, plan.steps_per_epoch, plan.total_steps) == (32, 24, 96)
    uneven_global = plan_steps([10, 10, 10], global_batch_size=100, epochs=1)
    assert (uneven_global.global_batch_size, uneven_global.per_worker_batch_size) == (99, 33)
    assert plan_steps([3], global_batch_size=1024, epochs=2).total_steps == 2


def test_an_empty_worker_is_an_error_every_worker_reports_alike():
    with pytest.raises(ValueError, match=r"worker\(s\) \[1\] received no rows"):
        plan_steps([10, 0], global_batch_size=4, epochs=1)
    with pytest.raises(ValueError, match="smaller than the number of workers"):
        plan_steps([10, 10, 10], global_batch_size=2, epochs=1)


def test_worker_info_travels_as_json_and_ports_are_reserved_until_released():
    info = WorkerInfo("10.0.0.7:4242", rows=12, cuda_visible_devices="1")
    assert WorkerInfo.from_json(info.to_json()) == info
    assert task_host("10.0.0.7:35111") == "10.0.0.7"
    held = reserve_port("127.0.0.1")
    port = held.getsockname()[1]
    with socket.socket() as other, pytest.raises(OSError) as refused:
        other.bind(("127.0.0.1", port))
    assert refused.value.errno == errno.EADDRINUSE
    held.close()
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))
