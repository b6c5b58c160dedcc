"""`TFOnSparkOperator`: train a tfspark trainer on Spark from Airflow and push its training summary."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from lakeloop.names import GPU_POOL
from tfspark.config import SUMMARY_FILE
from tfspark.driver.submit import (
    SubmitOptions,
    SubmitPlan,
    build_plan,
    default_spark_submit,
    driver_application,
    positive_seconds,
    whole_number,
)
from tfspark.storage import RemoteDirectory

if TYPE_CHECKING:
    from airflow.sdk import Context


def spark_master(conn_id: str, deploy_mode: str | None = None) -> tuple[str, str | None]:
    """The master and deploy mode `SparkSubmitHook` submits to through the Spark connection `conn_id`.

    Read as the provider's hook reads it: a `spark` connection's host is the master URL (`local[2]`,
    `spark://head:7077`...) unless a port is set without a scheme, other types give `<type>://<host>`, and a
    port is appended; the deploy mode is `deploy_mode` or the connection's `deploy-mode` extra. Without the
    connection, the hook submits to `yarn`.
    """
    try:
        connection = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return "yarn", deploy_mode
    host = connection.host or ""
    if connection.conn_type == "spark" and host and ("://" in host or not connection.port):
        master = host
    else:
        master = f"{connection.conn_type}://{host}"
    if connection.port:
        master = f"{master}:{connection.port}"
    return master, deploy_mode or connection.extra_dejson.get("deploy-mode")


class TFOnSparkOperator(SparkSubmitOperator):
    """`SparkSubmitOperator` running a tfspark trainer as `tfspark-submit` would; returns the training summary.

    The application is tfspark's driver application with the trainer options as its arguments; the master and
    deploy mode of the Spark connection `conn_id` decide tfspark's Spark configuration (GPUs are scheduled
    differently on a local master), and `conf` wins over it. Every other `SparkSubmitOperator` parameter
    (`env_vars`, `py_files`, `driver_memory`, `executor_memory`, `executor_cores`, `num_executors`,
    `durable`...) is passed on as is; like the provider's operator, this one is `durable` unless told otherwise.
    After the application succeeds, `<output_dir>/train_summary.json` is returned, which pushes it to XCom.

    An Airflow retry starts a new Spark application (a durable one reconnects to a driver still running on a
    cluster instead); keep `checkpoint_dir` the same across retries of one DAG run (template it from the run,
    not the try number) and the new application resumes from the last checkpoint.

    :param trainer: `module:Class` of a `tfspark.TFSparkTrainer` subclass. (templated)
    :param num_workers: TensorFlow workers, i.e. barrier tasks; the cluster needs that many task slots. None (the
        default): one per executor, so one on a local master (see docs/tfspark.md, workers).
    :param gpus_per_worker: GPUs per worker (0: CPU only).
    :param checkpoint_dir: Checkpoint directory, `file://` URL or path. (templated)
    :param output_dir: Where `model.keras` and `train_summary.json` go, `file://` URL or path. (templated)
    :param trainer_args: `--trainer-arg` pairs, passed to the trainer's constructor as strings. (templated)
    :param python_env: A packed venv/conda archive for the executors (venv-pack, conda-pack), shipped as
        `spark.archives` unless `conf` sets that itself (spark-submit prefers an `archives` argument). (templated)
    :param cache_memory_mb: Per-worker feed cache held in memory before spilling to local disk.
    :param checkpoint_every: Steps between checkpoints (default: the trainer's `checkpoint_every`). (templated)
    :param checkpoint_seconds: Also checkpoint when this many seconds passed since the last one (default: the
        trainer's `checkpoint_seconds`, else off). (templated)
    :param conn_id: The Spark connection (master, deploy mode, queue).
    :param deploy_mode: `client` or `cluster`, instead of the connection's.
    :param name: The Spark application name. (templated)
    :param spark_binary: The spark-submit to run (default: the one next to this Python, else PATH's).
    :param pool: The Airflow pool (default `gpu_pool`, so trainings queue for the GPUs).
    """

    template_fields: Sequence[str] = (
        *SparkSubmitOperator.template_fields,
        "trainer",
        "checkpoint_dir",
        "output_dir",
        "trainer_args",
        "python_env",
        "checkpoint_every",
        "checkpoint_seconds",
    )
    template_fields_renderers = {"conf": "json", "trainer_args": "json", "env_vars": "json"}
    ui_color = "#fdf2e6"

    def __init__(
        self,
        *,
        trainer: str,
        num_workers: int | None = None,
        gpus_per_worker: int = 0,
        checkpoint_dir: str | None = None,
        output_dir: str | None = None,
        trainer_args: dict[str, Any] | None = None,
        python_env: str | None = None,
        cache_memory_mb: int | None = None,
        checkpoint_every: int | str | None = None,
        checkpoint_seconds: float | str | None = None,
        conn_id: str = "spark_default",
        deploy_mode: str | None = None,
        name: str = "tfspark",
        spark_binary: str | None = None,
        pool: str = GPU_POOL,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            application=driver_application(),
            conn_id=conn_id,
            deploy_mode=deploy_mode,
            name=name,
            spark_binary=spark_binary or default_spark_submit(),
            pool=pool,
            **kwargs,
        )
        self.trainer = trainer
        self.num_workers = num_workers
        self.gpus_per_worker = gpus_per_worker
        self.checkpoint_dir = checkpoint_dir
        self.output_dir = output_dir
        self.trainer_args = trainer_args or {}
        self.python_env = python_env
        self.cache_memory_mb = cache_memory_mb
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self.conn_id = conn_id
        self.deploy_mode = deploy_mode

    def submit_options(self) -> SubmitOptions:
        """The tfspark options of this task (after templating)."""
        return SubmitOptions(
            trainer=self.trainer,
            num_workers=self.num_workers,
            gpus_per_worker=self.gpus_per_worker,
            checkpoint_dir=self.checkpoint_dir,
            output_dir=self.output_dir,
            python_env=self.python_env,
            trainer_args={str(key): str(value) for key, value in self.trainer_args.items()},
            cache_memory_mb=self.cache_memory_mb,
            checkpoint_every=_optional_number(self.checkpoint_every, whole_number(1), "checkpoint_every"),
            checkpoint_seconds=_optional_number(self.checkpoint_seconds, positive_seconds, "checkpoint_seconds"),
        )

    def prepare_submission(self) -> SubmitPlan:
        """Set `conf` and `application_args` to what `tfspark-submit` would pass for this task's master.

        The user's `conf` keys win over tfspark's; calling this again changes nothing.
        """
        user_conf = {str(key): str(value) for key, value in (self.conf or {}).items()}
        master, deploy_mode = spark_master(self.conn_id, self.deploy_mode)
        plan = build_plan(self.submit_options(), master, user_conf, deploy_mode)
        self.conf = {**plan.conf, **user_conf}
        if plan.archives:
            self.conf.setdefault("spark.archives", plan.archives)
        self.application_args = plan.application_args
        return plan

    def execute(self, context: Context) -> dict[str, Any] | None:
        """Submit the training job (or reconnect to it), wait for it, and return its training summary."""
        self.prepare_submission()
        store = context.get("task_state_store")
        if store is None or not store.get(self.external_id_key):
            self._forget_summary()  # else a durable retry reconnects to a job whose summary may be written already
        super().execute(context)
        return self.training_summary()

    def submit_job(self, context: Context) -> str | None:
        """Submit a new application on the durable path; an earlier one's summary must not stand for it."""
        self._forget_summary()
        return super().submit_job(context)

    def training_summary(self) -> dict[str, Any] | None:
        """`<output_dir>/train_summary.json` of the finished job (None without an `output_dir`)."""
        if not self.output_dir:
            self.log.warning("no output_dir: the training summary stays in the driver's temporary directory")
            return None
        summary = json.loads(RemoteDirectory.for_url_or_local(self.output_dir).read_bytes(SUMMARY_FILE) or b"null")
        if summary is None:
            raise RuntimeError(f"the training job succeeded but wrote no {SUMMARY_FILE} in {self.output_dir}")
        self.log.info(
            "trained %s: global_step=%s resumed_from_step=%s loss=%s",
            self.trainer,
            summary.get("global_step"),
            summary.get("resumed_from_step"),
            summary.get("loss"),
        )
        return summary

    def _forget_summary(self) -> None:
        if self.output_dir:
            RemoteDirectory.for_url_or_local(self.output_dir).delete(SUMMARY_FILE)


def _optional_number(value: object, parse: Callable[[str], int | float], name: str) -> int | float | None:
    """A templated number (rendered as text, or empty for "not set") read by `parse`, the same check as
    `tfspark-submit`'s option of that name, or None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return parse(str(value))
    except argparse.ArgumentTypeError:
        raise ValueError(
            f"{name} must be a number above 0 (or empty for the trainer's default), got {value!r}") from None
