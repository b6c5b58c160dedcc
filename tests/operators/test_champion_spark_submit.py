"""The batch-prediction task asks the real registry first: skipped without a champion (so no Asset event),
failed when the registry cannot answer, submitted when there is one."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowSkipException

from lakeloop.registry import DAY_TAG, RegistryUnavailableError
from lakeloop.services import free_port
from operators.champion_spark_submit import ChampionSparkSubmitOperator

MODEL = "champion-operator-test-fm"


def operator(tracking_uri: str, tmp_path: Path) -> ChampionSparkSubmitOperator:
    """The task as the DAG builds it, with an application that does not exist (submitting it fails at once)."""
    return ChampionSparkSubmitOperator(task_id="batch_predict", application=str(tmp_path / "no-such-job.py"),
                                       model_name=MODEL, tracking_uri=tracking_uri,
                                       spark_binary=str(Path(sys.executable).parent / "spark-submit"))


@pytest.fixture
def tracking(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_without_a_champion_the_task_is_skipped_before_any_submission(tracking, tmp_path):
    from mlflow import MlflowClient

    with pytest.raises(AirflowSkipException, match=f"no champion version of {MODEL}"):
        operator(tracking, tmp_path).execute({})
    MlflowClient(tracking_uri=tracking).create_registered_model(MODEL)  # a challenger only, as after a rejection
    with pytest.raises(AirflowSkipException):
        operator(tracking, tmp_path).execute({})


def test_a_registry_that_does_not_answer_fails_the_task(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(RegistryUnavailableError):
        operator(f"http://127.0.0.1:{free_port()}", tmp_path).execute({})


def test_with_a_champion_the_job_is_submitted(tracking, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", '{"conn_type": "spark", "host": "local[1]"}')
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    client = MlflowClient(tracking_uri=tracking)
    client.create_registered_model(MODEL)
    version = client.create_model_version(MODEL, source=(tmp_path / "model").as_uri(), tags={DAY_TAG: "2026-11-20"})
    client.set_registered_model_alias(MODEL, "champion", version.version)
    with pytest.raises(AirflowException, match="no-such-job.py"):  # spark-submit ran, and failed on the file
        operator(tracking, tmp_path).execute({})
