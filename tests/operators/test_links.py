"""Operator extra links. The MLflow links read the task's XCom, which only a running task can, so they are
checked end to end in tests/dags/test_daily_retrain_scheduler.py (the browser follows one)."""

from __future__ import annotations

import json
from types import SimpleNamespace

from operators.links import SparkUILink, mlflow_ui_url


def test_the_spark_ui_link_comes_from_the_spark_connection(monkeypatch):
    operator = SimpleNamespace(conn_id="spark_cluster")
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_CLUSTER", json.dumps(
        {"conn_type": "spark", "host": "spark://master:7077", "extra": {"ui_url": "http://history:18080"}}))
    assert SparkUILink().get_link(operator, ti_key=None) == "http://history:18080"
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_CLUSTER", json.dumps({"conn_type": "spark", "host": "local[*]"}))
    assert SparkUILink().get_link(operator, ti_key=None) == ""


def test_the_provider_operator_keeps_its_connection_id_private(monkeypatch):
    operator = SimpleNamespace(_conn_id="spark_cluster")
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_CLUSTER", json.dumps(
        {"conn_type": "spark", "host": "yarn", "extra": {"ui_url": "http://rm:8088"}}))
    assert SparkUILink().get_link(operator, ti_key=None) == "http://rm:8088"


def test_the_mlflow_address_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("LAKELOOP_MLFLOW_UI_URL", "http://mlflow.internal:5000/")
    assert mlflow_ui_url() == "http://mlflow.internal:5000"
