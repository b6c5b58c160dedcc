"""TFOnSparkOperator: a durable SparkSubmitOperator; the command it submits through the Spark connection, and a
real job with an Airflow retry."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tfspark.driver.submit import driver_application

TESTS_TFSPARK = Path(__file__).resolve().parents[1] / "tfspark"
TINY_TRAINER = "tiny_trainer:TinyRatingsTrainer"
LOGICAL_DATE = datetime(2026, 11, 20, tzinfo=UTC)


def submit_command(operator) -> list[str]:
    """The spark-submit command the operator's hook would run (built by the provider's own hook)."""
    operator.prepare_submission()
    return operator._get_hook()._build_spark_submit_command(operator.application)


def conf_of(command: list[str]) -> dict[str, str]:
    pairs = [command[i + 1] for i, arg in enumerate(command) if arg == "--conf"]
    return dict(pair.split("=", 1) for pair in pairs)


def test_importing_the_operator_imports_neither_tensorflow_nor_pyspark():
    probe = (
        "import sys, operators.tf_on_spark; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'pyspark', 'pyarrow') if m in sys.modules))"
    )
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "[]"


def test_defaults_and_templated_fields():
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    from operators.tf_on_spark import TFOnSparkOperator

    operator = TFOnSparkOperator(task_id="train_model", trainer="lakeloop.fm_trainer:FMTrainer")
    assert isinstance(operator, SparkSubmitOperator)
    assert operator.durable is True, "a worker crash reconnects to the running job, as for the DAG's Spark tasks"
    assert TFOnSparkOperator(task_id="t", trainer="m:T", durable=False).durable is False
    assert operator.pool == "gpu_pool"
    assert (operator.num_workers, operator.gpus_per_worker, operator.conn_id) == (None, 0, "spark_default")
    assert (operator.name, operator.application) == ("tfspark", driver_application())
    assert {"trainer", "checkpoint_dir", "output_dir", "trainer_args", "conf", "python_env", "name", "env_vars",
            "py_files", "checkpoint_every", "checkpoint_seconds"} <= set(TFOnSparkOperator.template_fields)
    assert set(SparkSubmitOperator.template_fields) <= set(TFOnSparkOperator.template_fields)


def test_the_command_takes_its_master_from_the_spark_connection(monkeypatch):
    from operators.tf_on_spark import TFOnSparkOperator

    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps({"conn_type": "spark", "host": "local[2,3]"}))
    operator = TFOnSparkOperator(
        task_id="train_model",
        trainer="lakeloop.fm_trainer:FMTrainer",
        num_workers=2,
        checkpoint_dir="file:///lake/checkpoints/fm/run",
        output_dir="file:///lake/models/fm/dt=2026-11-20",
        trainer_args={"day": "2026-11-20", "epochs": 3},
        conf={"spark.driver.memory": "2g"},
        checkpoint_seconds="300",
    )
    command = submit_command(operator)
    assert command[0] == str(Path(sys.executable).parent / "spark-submit")
    assert command[command.index("--master") + 1] == "local[2,3]"
    conf = conf_of(command)
    assert conf["spark.python.worker.reuse"] == "false"
    assert conf["spark.pyspark.python"] == sys.executable
    assert conf["spark.driver.memory"] == "2g"
    assert command[command.index(driver_application()) :] == [
        driver_application(),
        "--trainer", "lakeloop.fm_trainer:FMTrainer", "--num-workers", "2",
        "--checkpoint-dir", "file:///lake/checkpoints/fm/run",
        "--output-dir", "file:///lake/models/fm/dt=2026-11-20",
        "--checkpoint-seconds", "300",
        "--trainer-arg", "day=2026-11-20", "--trainer-arg", "epochs=3",
    ]  # fmt: skip


@pytest.mark.parametrize("every, seconds", [("0", None), (None, "-5"), ("often", None), (None, "soon"),
                                            ("7.5", None), (None, "inf")])
def test_a_checkpoint_interval_that_is_not_a_positive_number_is_refused(every, seconds):
    from operators.tf_on_spark import TFOnSparkOperator

    operator = TFOnSparkOperator(task_id="t", trainer="m:T", checkpoint_every=every, checkpoint_seconds=seconds)
    with pytest.raises(ValueError, match="must be a number above 0"):
        operator.submit_options()


def test_an_empty_checkpoint_interval_leaves_the_trainers_own():
    from operators.tf_on_spark import TFOnSparkOperator

    operator = TFOnSparkOperator(task_id="t", trainer="m:T", checkpoint_every="", checkpoint_seconds=" ")
    options = operator.submit_options()
    assert (options.checkpoint_every, options.checkpoint_seconds) == (None, None)


def test_gpus_become_spark_task_resources_on_a_cluster_connection(monkeypatch):
    from operators.tf_on_spark import TFOnSparkOperator

    monkeypatch.setenv("AIRFLOW_CONN_SPARK_GPU", json.dumps({"conn_type": "spark", "host": "spark://head:7077"}))
    operator = TFOnSparkOperator(
        task_id="train_model", trainer="m:T", num_workers=4, gpus_per_worker=1, conn_id="spark_gpu"
    )
    conf = conf_of(submit_command(operator))
    assert (conf["spark.executor.resource.gpu.amount"], conf["spark.task.resource.gpu.amount"]) == ("1", "1")


def test_a_python_env_ships_as_spark_archives_and_the_deploy_mode_comes_from_the_connection(monkeypatch):
    from operators.tf_on_spark import TFOnSparkOperator

    yarn_cluster = {"conn_type": "spark", "host": "yarn", "extra": {"deploy-mode": "cluster"}}
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_YARN", json.dumps(yarn_cluster))
    operator = TFOnSparkOperator(
        task_id="train_model", trainer="m:T", python_env="hdfs:///envs/tf.tar.gz", conn_id="spark_yarn"
    )
    command = submit_command(operator)
    assert command[command.index("--deploy-mode") + 1] == "cluster"
    conf = conf_of(command)
    assert conf["spark.archives"] == "hdfs:///envs/tf.tar.gz#environment"
    assert conf["spark.pyspark.python"] == conf["spark.pyspark.driver.python"] == "./environment/bin/python"
    assert submit_command(operator) == command, "preparing the submission again changes nothing"
    missing = TFOnSparkOperator(task_id="train_model", trainer="m:T", conn_id="no_such_connection")
    assert conf_of(submit_command(missing))["spark.dynamicAllocation.enabled"] == "false", "yarn, as the hook's"


def run_dag_test(dag, logical_date: datetime):
    """`dag.test()` for a DAG defined in a test: register its serialized form first (it lives in no DAG file)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    with create_session() as session:
        DagBundlesManager().sync_bundles_to_db(session=session)
        session.commit()
        update_dag_parsing_results_in_db(
            "dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session=session
        )
    return dag.test(logical_date=logical_date)


def returned_summary(dag_run) -> dict:
    """The XCom return value of `train_model` in a finished DAG run, read from the metadata database."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id="train_model", key="return_value")
            .one()
        )
        return json.loads(row.value) if isinstance(row.value, str) else row.value


@pytest.mark.slow
def test_an_airflow_retry_starts_a_new_application_that_resumes_from_the_checkpoint(airflow_db, tmp_path, monkeypatch):
    from airflow.sdk import DAG

    from operators.tf_on_spark import TFOnSparkOperator

    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps({"conn_type": "spark", "host": "local[1]"}))
    failed_once, shutdowns = tmp_path / "failed-once", tmp_path / "shutdown"
    with DAG(
        dag_id=f"train_{uuid.uuid4().hex[:8]}",
        schedule=None,
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        params={"base": tmp_path.as_uri(), "checkpoint_every": 7},
        default_args={"owner": "lakeloop", "retries": 1, "retry_delay": timedelta(0)},
    ) as dag:
        TFOnSparkOperator(
            task_id="train_model",
            trainer=TINY_TRAINER,
            checkpoint_dir="{{ params.base }}/checkpoints/{{ run_id | replace(':', '_') }}",
            output_dir="{{ params.base }}/models/dt={{ ds }}",
            checkpoint_every="{{ params.checkpoint_every }}",
            trainer_args={
                "fail_at_step": "30",
                "fail_mode": "raise",
                "fail_marker": str(failed_once),
                "shutdown_marker": str(shutdowns),
            },
            conf={
                # Spark would rerun the failed barrier stage inside the application; make the application
                # fail instead, as a lost driver or exhausted stage attempts would, so that Airflow retries.
                "spark.stage.maxConsecutiveAttempts": "1",
                "spark.ui.enabled": "false",
                "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
                "spark.executorEnv.PYTHONPATH": str(TESTS_TFSPARK),
            },
            env_vars={"PYTHONPATH": str(TESTS_TFSPARK), "SPARK_LOCAL_IP": "127.0.0.1"},
        )

    dag_run = run_dag_test(dag, LOGICAL_DATE)

    assert dag_run.state == "success"
    (task_instance,) = dag_run.get_task_instances()
    assert task_instance.try_number == 2, "the first try failed in the middle of training"
    assert failed_once.exists() and shutdowns.exists()
    summary = returned_summary(dag_run)
    assert summary["resumed_from_step"] == 28, "the retry restored the checkpoint of step 28 (every 7 steps, as the " \
        "task asked; the trainer's own interval is 10)"
    assert summary["global_step"] == 96
    assert summary["workers"] == 1 and summary["rows"] == 1501
    model_dir = tmp_path / "models" / "dt=2026-11-20"
    assert json.loads((model_dir / "train_summary.json").read_text()) == summary
    assert (model_dir / "model.keras").is_file()
