"""Operator extra links: buttons on a task instance in the Airflow UI that open MLflow or the Spark UI.

See docs/operations.md (extra links).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

from lakeloop.airflow_env import DEFAULT_MLFLOW_UI_URL

RETURN_VALUE = "return_value"


def mlflow_ui_url() -> str:
    """The MLflow UI's base address, without a trailing slash."""
    return os.environ.get("LAKELOOP_MLFLOW_UI_URL", DEFAULT_MLFLOW_UI_URL).rstrip("/")


class MLflowModelVersionLink(BaseOperatorLink):
    """The model version a `register_model` task registered (`model_name` and `version` in its XCom)."""

    name = "MLflow model version"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        """`<mlflow>/#/models/<name>/versions/<version>`, or "" before a registration exists."""
        registration = XCom.get_value(ti_key=ti_key, key=RETURN_VALUE) or {}
        if not registration.get("model_name") or not registration.get("version"):
            return ""
        return f"{mlflow_ui_url()}/#/models/{quote(registration['model_name'])}/versions/{registration['version']}"


class MLflowRunLink(BaseOperatorLink):
    """The MLflow run that logged a registered model (`run_id` in the task's XCom)."""

    name = "MLflow run"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        """`<mlflow>/#/experiments/<experiment>/runs/<run>`, or "" when the task logged no run."""
        run_id = (XCom.get_value(ti_key=ti_key, key=RETURN_VALUE) or {}).get("run_id")
        if not run_id:
            return ""
        from mlflow import MlflowClient

        experiment_id = MlflowClient().get_run(run_id).info.experiment_id
        return f"{mlflow_ui_url()}/#/experiments/{experiment_id}/runs/{run_id}"


class MLflowRegisteredModelLink(BaseOperatorLink):
    """The registered model a training feeds: all its versions, the day's one tagged `lakeloop.day`.

    A training task finishes before its model is registered, so it links to the model, not a version.
    """

    name = "MLflow model"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        """`<mlflow>/#/models/<LAKELOOP_MODEL_NAME>`, or "" when the training pushed no summary."""
        from lakeloop.config import load_settings

        if not XCom.get_value(ti_key=ti_key, key=RETURN_VALUE):
            return ""
        return f"{mlflow_ui_url()}/#/models/{quote(load_settings().model_name)}"


class SparkUILink(BaseOperatorLink):
    """The Spark UI named by the `ui_url` extra of the task's Spark connection, if it has one."""

    name = "Spark UI"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        """The connection's `ui_url`, or "" (no lasting Spark UI, e.g. a `local[*]` master)."""
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        conn_id = getattr(operator, "conn_id", None) or getattr(operator, "_conn_id", None) or "spark_default"
        try:
            return str(BaseHook.get_connection(conn_id).extra_dejson.get("ui_url") or "")
        except AirflowNotFoundException:
            return ""


LINKS = (MLflowModelVersionLink(), MLflowRunLink(), MLflowRegisteredModelLink(), SparkUILink())
