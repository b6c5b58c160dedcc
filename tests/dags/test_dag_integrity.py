"""Every DAG parses cleanly and cheaply (no TensorFlow, pyspark, numpy or pyarrow at parse time) and follows
house rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY_MODULES = ("tensorflow", "keras", "pyspark", "mlflow", "torch", "numpy", "pyarrow", "pandas")
SPARK_TASK_IDS = {"spark_etl", "spark_features", "batch_predict"}
TASK_IDS = ["ingest_ratings", "spark_etl", "spark_features", "train_model", "evaluate_model", "register_model",
            "batch_predict"]


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAKELOOP_RUN_DEADLINE_MINUTES", "360")
        return DagBag(dag_folder=str(REPO / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert {"daily_retrain", "lake_maintenance"} <= set(dagbag.dags)


def test_every_task_has_an_owner_and_retries(dagbag):
    for dag in dagbag.dags.values():
        assert dag.tags, f"{dag.dag_id} has no tags"
        assert dag.doc_md, f"{dag.dag_id} has no documentation"
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", f"{dag.dag_id}.{task.task_id} has no owner"
            assert task.retries >= 1, f"{dag.dag_id}.{task.task_id} has no retries"


def test_daily_retrain_runs_the_loop_in_order(dagbag):
    dag = dagbag.dags["daily_retrain"]
    assert [task.task_id for task in dag.topological_sort()] == TASK_IDS
    assert dag.catchup is True
    assert dag.get_task("train_model").pool == "gpu_pool"


def test_daily_retrain_is_bounded_retried_and_alerted(dagbag):
    from operators.notifiers import LakeloopNotifier

    dag = dagbag.dags["daily_retrain"]
    assert dag.max_active_runs == 1
    assert isinstance(dag.on_failure_callback, LakeloopNotifier)
    [deadline] = dag.deadline
    assert deadline.callback.path == "operators.notifiers.LakeloopNotifier"
    assert deadline.interval.total_seconds() == 360 * 60
    assert {task.task_id for task in dag.tasks if task.pool == "spark_pool"} == SPARK_TASK_IDS
    for task in dag.tasks:
        assert task.retry_exponential_backoff > 1 and task.max_retry_delay, task.task_id
        assert task.execution_timeout is not None, task.task_id
        assert task.max_active_tis_per_dag == 1, task.task_id
        assert task.depends_on_past, task.task_id
        assert any(isinstance(callback, LakeloopNotifier) for callback in task.on_failure_callback), task.task_id
        assert not task.on_retry_callback, task.task_id
    assert all(dag.get_task(task_id).durable for task_id in SPARK_TASK_IDS)
    assert {task.task_id for task in dag.tasks if task.wait_for_downstream} == {"evaluate_model", "register_model"}


def test_batch_predict_is_skipped_without_a_champion_so_its_asset_is_not_updated(dagbag):
    from operators.champion_spark_submit import ChampionSparkSubmitOperator

    batch_predict = dagbag.dags["daily_retrain"].get_task("batch_predict")
    assert isinstance(batch_predict, ChampionSparkSubmitOperator)
    assert [outlet.name for outlet in batch_predict.outlets] == ["lakeloop_predictions"]
    assert batch_predict.alias == "champion"


def test_the_etl_thresholds_are_run_params_of_the_dag(dagbag):
    dag = dagbag.dags["daily_retrain"]
    assert {"max_rating_drift", "rating_drift_severity", "min_rows", "empty_input_severity"} <= set(dag.params)
    arguments = dag.get_task("spark_etl").application_args
    for name in ("max_rating_drift", "rating_drift_severity", "min_rows", "empty_input_severity"):
        flag = "--" + name.replace("_", "-")
        assert arguments[arguments.index(flag) + 1] == f"{{{{ params.{name} }}}}"


def test_without_a_configured_deadline_the_dag_declares_none(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.delenv("LAKELOOP_RUN_DEADLINE_MINUTES", raising=False)
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert not bag.dags["daily_retrain"].deadline


def test_parsing_imports_nothing_heavy():
    probe = (
        "import json, sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(REPO / 'dags')!r})\n"
        "assert not bag.import_errors, bag.import_errors\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY_MODULES!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=dict(os.environ),
                            check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_a_run_id_reaches_the_checkpoint_path_only_as_one_path_segment(dagbag):
    dag = dagbag.dags["daily_retrain"]
    template = dag.get_template_env().from_string(dag.get_task("train_model").checkpoint_dir)
    assert template.render(run_id="scheduled__2026-11-20T00:00:00+00:00").endswith(
        "/scheduled__2026-11-20T00_00_00+00_00")
    for run_id in ("..", ".", "a/../b", ""):
        with pytest.raises(ValueError, match="run id"):
            template.render(run_id=run_id)
