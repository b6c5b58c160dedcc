"""The DAG `lake_maintenance`: its shape, and a real run (`dag.test()`) on a lake of crowded Delta tables."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from lakeloop.delta import open_table, read_partition
from lakeloop.delta_maintenance import files_per_day
from lakeloop.lake import Lake
from lakeloop.names import DELTA_TABLES, ITEM_EMBEDDINGS, PREDICTIONS, USER_EMBEDDINGS
from tests.lakeloop.test_delta_maintenance import crowded_table, sorted_rows

REPO = Path(__file__).resolve().parents[2]


def maintenance_dag(lake_url: str, monkeypatch: pytest.MonkeyPatch):
    """The DAG as the DAG processor parses it for a deployment whose lake is `lake_url`."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("LAKELOOP_LAKE_URL", lake_url)
    bag = DagBag(dag_folder=str(REPO / "dags" / "lake_maintenance.py"))
    assert bag.import_errors == {}
    return bag.dags["lake_maintenance"]


def test_one_retried_alerted_task_per_delta_table_once_a_week(tmp_path, monkeypatch):
    from operators.notifiers import LakeloopNotifier

    dag = maintenance_dag((tmp_path / "lake").as_uri(), monkeypatch)

    assert dag.schedule == "@weekly" and dag.catchup is False and dag.max_active_runs == 1
    assert isinstance(dag.on_failure_callback, LakeloopNotifier)
    [task] = dag.tasks
    assert task.task_id == "maintain_table"
    assert task.is_mapped and task.op_kwargs_expand_input.value == {"dataset": list(DELTA_TABLES)}
    assert task.retries >= 1 and task.retry_exponential_backoff > 1 and task.execution_timeout is not None
    callbacks = task.on_failure_callback  # a mapped task keeps what was given, one callback here
    assert any(isinstance(callback, LakeloopNotifier) for callback in
               (callbacks if isinstance(callbacks, list) else [callbacks]))


def test_a_run_compacts_every_delta_table_of_the_lake(airflow_db, tmp_path, monkeypatch):
    lake = Lake.from_url(str(tmp_path / "lake"))
    expected = {dataset: crowded_table(lake, dataset) for dataset in (PREDICTIONS, USER_EMBEDDINGS)}
    dag = maintenance_dag(lake.url, monkeypatch)

    dag_run = dag.test(logical_date=datetime(2026, 11, 22, tzinfo=UTC))

    assert dag_run.state == "success"
    for dataset, days in expected.items():
        assert set(files_per_day(open_table(lake, dataset)).values()) == {1}, dataset
        for day, rows in days.items():
            assert sorted_rows(read_partition(lake, dataset, day)).equals(sorted_rows(rows)), (dataset, day)
    assert open_table(lake, ITEM_EMBEDDINGS) is None, "a table the lake does not hold is left alone"
