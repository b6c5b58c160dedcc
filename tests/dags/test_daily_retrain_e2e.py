"""The whole daily loop, end to end, on real components: `airflow dags test daily_retrain D`.

A slice of MovieLens goes through the embedded Kafka-protocol broker over TCP, real Spark (local),
real TensorFlow (trained on Spark), and a real MLflow registry on SQLite. Counts must reconcile from
Kafka to the lake, a champion model must exist whose predictions land in the lake, and the run must
record an event of the predictions Asset.
"""

from __future__ import annotations

import sqlite3

import pytest
from daily_retrain_run import check_day_outputs, loop_environment, publish_day, run_dags_test

from lakeloop.config import load_settings

EVENTS = 20_000


@pytest.mark.slow
def test_daily_retrain_end_to_end(kafka_broker, movielens, tmp_path):
    env = loop_environment(kafka_broker.bootstrap, tmp_path / "state", "e2e-ratings", "e2e-fm",
                           f"sqlite:///{tmp_path / 'mlflow.db'}")
    settings = load_settings(env)
    publish_day(settings, movielens, EVENTS)
    run_dags_test(env)
    check_day_outputs(settings, EVENTS)
    uri = f"{settings.lake_url}/predictions"
    with sqlite3.connect(settings.airflow_home / "airflow.db") as db:
        events = db.execute("select e.source_task_id from asset_event e join asset a on a.id = e.asset_id "
                            "where a.uri = ?", (uri,)).fetchall()
    assert events == [("batch_predict",)]
