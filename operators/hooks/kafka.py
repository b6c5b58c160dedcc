"""A hook reading exact time slices of a Kafka topic into the lake (`lakeloop.ingest.interval` does the work).

Brokers and credentials come from an Airflow connection of type `kafka` or, without one, from the
environment; see docs/deployment.md (the Kafka connection).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from lakeloop.ingest.kafka_config import client_config_from_env, normalize_client_options
from lakeloop.ingest.options import IngestOptions
from lakeloop.ingest.schema import RecordSchema
from lakeloop.ingest.slices import open_consumer

if TYPE_CHECKING:
    from lakeloop.ingest.interval import IngestResult


class KafkaSliceHook(BaseHook):
    """Builds Kafka consumers from a connection (or the environment) and ingests interval slices.

    Args:
        kafka_conn_id: Airflow connection id; None uses the environment of the default set-up.
        environ: Environment to read when `kafka_conn_id` is None (default: the process environment).
    """

    conn_name_attr = "kafka_conn_id"
    default_conn_name = "kafka_default"
    conn_type = "kafka"
    hook_name = "Kafka (lakeloop slices)"

    def __init__(self, kafka_conn_id: str | None = None, environ: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.kafka_conn_id = kafka_conn_id
        self.environ = environ

    def get_client_config(self) -> dict[str, Any]:
        """kafka-python client options: bootstrap servers plus any security settings."""
        if self.kafka_conn_id is None:
            return client_config_from_env(self.environ)
        connection = self.get_connection(self.kafka_conn_id)
        return client_config_from_connection(
            host=connection.host, port=connection.port, login=connection.login, password=connection.password,
            extra=connection.extra_dejson, conn_id=self.kafka_conn_id)

    def get_consumer(self, options: IngestOptions | None = None) -> Any:
        """A KafkaConsumer for manual assignment (bounded connection retries, no auto-commit)."""
        return open_consumer(self.get_client_config(), options)

    def ingest_interval(self, topic: str, lake_url: str, interval_start: datetime, interval_end: datetime, *,
                        schema: RecordSchema, dataset: str, rejected_dataset: str,
                        options: IngestOptions | None = None) -> IngestResult:
        """Ingest the slice of `topic` for [interval_start, interval_end) into the lake at `lake_url` (a path,
        `file://` or `s3://` URL; see docs/ingestion.md)."""
        from lakeloop.ingest.interval import ingest_interval  # numpy and pyarrow: not at DAG parse time

        lake = lake_url.rstrip("/")
        self.log.info("ingesting %s [%s, %s) into %s/%s (rejects: %s) via %s", topic, interval_start, interval_end,
                      lake, dataset, rejected_dataset,
                      f"connection {self.kafka_conn_id}" if self.kafka_conn_id else "LAKELOOP_KAFKA_BOOTSTRAP")
        return ingest_interval(self.get_client_config(), topic, lake, interval_start, interval_end, schema=schema,
                               dataset=dataset, rejected_dataset=rejected_dataset, options=options)


def client_config_from_connection(*, host: str | None, port: int | None, login: str | None, password: str | None,
                                  extra: Mapping[str, Any], conn_id: str = "<connection>") -> dict[str, Any]:
    """kafka-python client options from the fields of an Airflow connection (see the module docstring)."""
    options = normalize_client_options(extra)
    if "bootstrap_servers" not in options:
        if not host:
            raise ValueError(f"Kafka connection {conn_id!r} has neither a host nor extra bootstrap_servers")
        servers = host if ("," in host or ":" in host or not port) else f"{host}:{port}"
        options.update(normalize_client_options({"bootstrap_servers": servers}))
    if login:
        options.setdefault("sasl_plain_username", login)
    if password:
        options.setdefault("sasl_plain_password", password)
    return options
