"""`TFOnSparkOperator`: train a tfspark trainer on Spark from Airflow and push its training summary."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from tfspark.storage import RemoteDirectory
from tfspark.submit import SUMMARY_FILE, SubmitOptions, SubmitPlan, build_plan, default_spark_submit


class TFOnSparkOperator(BaseOperator):
    """Run `tfspark-submit`'s job through the Spark provider's `SparkSubmitHook`; return the summary.

    The Spark master and deploy mode come from the Airflow connection `conn_id`, as for
    `SparkSubmitOperator`; the command is the one `tfspark-submit` builds for the same options. After the
    application succeeds, `<output_dir>/train_summary.json` is returned, which pushes it to XCom.

    An Airflow retry starts a new Spark application; keep `checkpoint_dir` the same across retries of one
    DAG run (template it from the run, not the try number) and the retry resumes from the last checkpoint.

    :param trainer: `module:Class` of a `tfspark.TFSparkTrainer` subclass. (templated)
    :param num_workers: TensorFlow workers, i.e. barrier tasks; the cluster needs that many task slots.
    :param gpus_per_worker: GPUs per worker (0: CPU only).
    :param checkpoint_dir: Checkpoint directory, `file://` URL or path. (templated)
    :param output_dir: Where `model.keras` and `train_summary.json` go, `file://` URL or path. (templated)
    :param trainer_args: `--trainer-arg` pairs, passed to the trainer's constructor as strings. (templated)
    :param conn_id: The Spark connection (master, deploy mode, queue).
    :param conf: Extra Spark configuration; it wins over tfspark's defaults. (templated)
    :param python_env: A packed venv/conda archive for the executors (venv-pack, conda-pack). (templated)
    :param name: The Spark application name. (templated)
    :param env_vars: Environment variables of the spark-submit process. (templated)
    :param py_files: Extra Python files for the driver and executors, comma-separated. (templated)
    :param cache_memory_mb: Per-worker feed cache held in memory before spilling to local disk.
    :param spark_binary: The spark-submit to run (default: the one next to this Python, else PATH's).
    :param driver_memory: Driver memory, e.g. `2g`.
    :param executor_memory: Executor memory, e.g. `4g`.
    :param executor_cores: Cores per executor.
    :param num_executors: Executors to launch (YARN).
    :param pool: The Airflow pool (default `gpu_pool`, so trainings queue for the GPUs).
    """

    template_fields: Sequence[str] = (
        "trainer",
        "checkpoint_dir",
        "output_dir",
        "trainer_args",
        "conf",
        "python_env",
        "name",
        "env_vars",
        "py_files",
    )
    template_fields_renderers = {"conf": "json", "trainer_args": "json", "env_vars": "json"}
    ui_color = "#fdf2e6"

    def __init__(
        self,
        *,
        trainer: str,
        num_workers: int = 1,
        gpus_per_worker: int = 0,
        checkpoint_dir: str | None = None,
        output_dir: str | None = None,
        trainer_args: dict[str, Any] | None = None,
        conn_id: str = "spark_default",
        conf: dict[str, Any] | None = None,
        python_env: str | None = None,
        name: str = "tfspark",
        env_vars: dict[str, Any] | None = None,
        py_files: str | None = None,
        cache_memory_mb: int | None = None,
        spark_binary: str | None = None,
        driver_memory: str | None = None,
        executor_memory: str | None = None,
        executor_cores: int | None = None,
        num_executors: int | None = None,
        pool: str = "gpu_pool",
        **kwargs: Any,
    ) -> None:
        super().__init__(pool=pool, **kwargs)
        self.trainer = trainer
        self.num_workers = num_workers
        self.gpus_per_worker = gpus_per_worker
        self.checkpoint_dir = checkpoint_dir
        self.output_dir = output_dir
        self.trainer_args = trainer_args or {}
        self.conn_id = conn_id
        self.conf = conf or {}
        self.python_env = python_env
        self.name = name
        self.env_vars = env_vars
        self.py_files = py_files
        self.cache_memory_mb = cache_memory_mb
        self.spark_binary = spark_binary
        self.driver_memory = driver_memory
        self.executor_memory = executor_memory
        self.executor_cores = executor_cores
        self.num_executors = num_executors
        self._hook: Any = None

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
        )

    def _make_hook(self, plan: SubmitPlan | None = None) -> Any:
        from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

        user_conf = {str(key): str(value) for key, value in self.conf.items()}
        return SparkSubmitHook(
            conf={**plan.conf, **user_conf} if plan else user_conf,
            conn_id=self.conn_id,
            archives=plan.archives if plan else None,
            py_files=self.py_files,
            driver_memory=self.driver_memory,
            executor_memory=self.executor_memory,
            executor_cores=self.executor_cores,
            num_executors=self.num_executors,
            name=self.name,
            application_args=plan.application_args if plan else None,
            env_vars=self.env_vars,
            spark_binary=self.spark_binary or default_spark_submit(),
        )

    def build_hook(self) -> tuple[Any, SubmitPlan]:
        """The `SparkSubmitHook` running this task's job, and the tfspark plan it was built from.

        The master decides part of the plan (GPUs are scheduled differently on a local master), so a first
        hook resolves the connection, the second one carries the plan.
        """
        connection = self._make_hook()._connection
        plan = build_plan(
            self.submit_options(),
            connection["master"],
            {str(key): str(value) for key, value in self.conf.items()},
            connection["deploy_mode"],
        )
        return self._make_hook(plan), plan

    def execute(self, context: Any) -> dict[str, Any] | None:
        """Submit the training job, wait for it, and return its training summary."""
        self._hook, plan = self.build_hook()
        output = RemoteDirectory.for_url_or_local(self.output_dir) if self.output_dir else None
        if output:
            output.delete(SUMMARY_FILE)
        self._hook.submit(plan.application)
        if output is None:
            self.log.warning("no output_dir: the training summary stays in the driver's temporary directory")
            return None
        summary = json.loads(output.read_bytes(SUMMARY_FILE) or b"null")
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

    def on_kill(self) -> None:
        """Stop the spark-submit process of a killed task."""
        if self._hook is not None:
            self._hook.on_kill()
