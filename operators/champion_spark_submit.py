"""`ChampionSparkSubmitOperator`: a Spark job that scores with a registry alias, skipped when the alias is absent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk.exceptions import AirflowSkipException

if TYPE_CHECKING:
    from airflow.sdk import Context


class ChampionSparkSubmitOperator(SparkSubmitOperator):
    """`SparkSubmitOperator` for a job that needs the registered version behind `alias` (batch prediction).

    Before submitting, the registry is asked for that version: none (the alias or the model does not exist yet,
    e.g. the quality gate rejected the first model) skips the task, so its outlets get no Asset event and
    downstream consumers are not told of predictions that were never written; a registry that cannot answer
    fails the task (`lakeloop.registry.RegistryUnavailableError`), which retries and alerts.

    :param model_name: The registered model. (templated)
    :param alias: The alias whose version the job scores with. (templated)
    :param tracking_uri: The MLflow tracking URI (default: `MLFLOW_TRACKING_URI`, as the job reads it).
    """

    template_fields: Sequence[str] = (*SparkSubmitOperator.template_fields, "model_name", "alias")

    def __init__(self, *, model_name: str, alias: str = "champion", tracking_uri: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.alias = alias
        self.tracking_uri = tracking_uri

    def execute(self, context: Context) -> None:
        """Skip without the aliased version; otherwise submit the job as `SparkSubmitOperator` does."""
        from lakeloop.registry import aliased_version

        version = aliased_version(self.model_name, self.alias, self.tracking_uri)
        if version is None:
            raise AirflowSkipException(f"no {self.alias} version of {self.model_name} in the registry: nothing to "
                                       "score with, so no predictions and no Asset event")
        self.log.info("%s of %s is version %s (trained on %s)", self.alias, self.model_name, version.version,
                      version.day)
        super().execute(context)
