"""How N barrier tasks become one TensorFlow cluster: GPUs, ports, `TF_CONFIG`, equal step counts.

The tasks exchange addresses with `BarrierTaskContext.allGather` (no ZooKeeper). Nothing here imports
TensorFlow, so the GPU environment is set before it is. See docs/tfspark.md.
"""

from __future__ import annotations

import json
import math
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any


def visible_gpus(
    resources: Mapping[str, Any], gpus_per_worker: int, rank: int = 0, local_gpus: Sequence[str] = ()
) -> str:
    """The `CUDA_VISIBLE_DEVICES` value for the task of worker `rank`.

    `resources` is `TaskContext.resources()` (name → ResourceInformation with `.addresses`): on a cluster
    Spark assigns each task its own GPUs. Spark does not schedule GPUs on a local master, so there the
    driver's GPUs (`local_gpus`) are split by rank instead. With `gpus_per_worker == 0` the task is
    CPU-only and sees no GPU ("").
    """
    if gpus_per_worker <= 0:
        return ""
    gpu = resources.get("gpu")
    if gpu is not None:
        addresses = list(gpu.addresses)
    else:
        addresses = list(local_gpus[rank * gpus_per_worker : (rank + 1) * gpus_per_worker])
    if len(addresses) < gpus_per_worker:
        raise RuntimeError(
            f"worker {rank} asked for {gpus_per_worker} GPU(s) but got {addresses}; check "
            "spark.task.resource.gpu.amount and the GPU discovery script (local masters: the driver's GPUs)"
        )
    return ",".join(addresses)


def assign_gpus(
    resources: Mapping[str, Any], gpus_per_worker: int, rank: int = 0, local_gpus: Sequence[str] = ()
) -> str:
    """Set `CUDA_VISIBLE_DEVICES` for this process (see `visible_gpus`); return the value set."""
    devices = visible_gpus(resources, gpus_per_worker, rank, local_gpus)
    os.environ["CUDA_VISIBLE_DEVICES"] = devices
    return devices


def reserve_port(host: str = "") -> socket.socket:
    """A bound socket on a free port; keep it open until the port is published, then close it."""
    sock = socket.socket()
    sock.bind((host, 0))
    return sock


def task_host(task_address: str) -> str:
    """The host part of a `BarrierTaskInfo.address` ("host:port")."""
    return task_address.rsplit(":", 1)[0]


@dataclass(frozen=True)
class WorkerInfo:
    """What each task tells the others during the rendezvous."""

    address: str
    rows: int
    cuda_visible_devices: str = ""

    def to_json(self) -> str:
        """The message this task sends (`allGather` exchanges strings)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerInfo:
        """A message another task sent."""
        return cls(**json.loads(text))


def gather_workers(barrier_context: Any, me: WorkerInfo) -> list[WorkerInfo]:
    """Exchange `WorkerInfo` with every task of the barrier stage; the list is ordered by rank."""
    return [WorkerInfo.from_json(message) for message in barrier_context.allGather(me.to_json())]


def tf_config(addresses: list[str], rank: int) -> dict[str, Any]:
    """The `TF_CONFIG` for worker `rank` of a `MultiWorkerMirroredStrategy` cluster (worker 0 is chief)."""
    return {"cluster": {"worker": list(addresses)}, "task": {"type": "worker", "index": rank}}


def set_tf_config(addresses: list[str], rank: int) -> None:
    """Export `TF_CONFIG` for a multi-worker cluster, or remove it for a single worker."""
    if len(addresses) > 1:
        os.environ["TF_CONFIG"] = json.dumps(tf_config(addresses, rank))
    else:
        os.environ.pop("TF_CONFIG", None)


@dataclass(frozen=True)
class StepPlan:
    """The batch sizes and step counts every worker agrees on."""

    global_batch_size: int
    per_worker_batch_size: int
    steps_per_epoch: int
    epochs: int

    @property
    def total_steps(self) -> int:
        """Steps of the whole run: `steps_per_epoch * epochs`."""
        return self.steps_per_epoch * self.epochs


def plan_steps(worker_rows: list[int], global_batch_size: int, epochs: int) -> StepPlan:
    """Split the global batch over the workers and size an epoch as ceil(total rows / global batch).

    Every worker runs the same number of steps (collectives would hang otherwise): a worker whose
    partition is short cycles over it again. A worker with no rows cannot, so every worker raises the
    same error instead of waiting for the others.
    """
    workers = len(worker_rows)
    empty = [rank for rank, rows in enumerate(worker_rows) if rows == 0]
    if empty:
        raise ValueError(
            f"worker(s) {empty} received no rows (rows per worker: {worker_rows}); "
            "give the DataFrame at least one row per worker"
        )
    per_worker = global_batch_size // workers
    if per_worker < 1:
        raise ValueError(f"batch_size {global_batch_size} is smaller than the number of workers ({workers})")
    effective_global = per_worker * workers
    steps = max(1, math.ceil(sum(worker_rows) / effective_global))
    return StepPlan(effective_global, per_worker, steps, epochs)
