"""Every DAG parses cleanly, cheaply (no TensorFlow or pyspark at parse time) and follows house rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY_MODULES = ("tensorflow", "keras", "pyspark", "mlflow", "torch")
TASK_IDS = ["ingest_ratings", "spark_etl", "spark_features", "train_model", "evaluate_model", "register_model",
            "batch_predict"]


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "daily_retrain" in dagbag.dags


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
