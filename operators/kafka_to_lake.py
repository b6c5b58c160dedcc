"""`KafkaToLakeOperator`: one data interval of a JSON Kafka topic → one day partition of the lake."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from lakeloop.ingest.errors import RejectionRateExceeded
from lakeloop.ingest.options import IngestOptions
from lakeloop.ingest.schema import RecordSchema
from operators.hooks.kafka import KafkaSliceHook


class KafkaToLakeOperator(BaseOperator):
    """Ingest the run's data interval [data_interval_start, data_interval_end) of a JSON topic.

    Reads exactly the records whose Kafka timestamps fall in the interval (`offsets_for_times`, manual
    assignment, no consumer group), validates them against `schema`, and replaces the day
    `dt=<data_interval_start date>` of the Delta table `<lake>/<dataset>` in one commit carrying the counts;
    malformed records go to the Delta table `<lake>/<rejected_dataset>` with a reason, committed first. Reruns
    yield the same rows. Returns the counts (read, written, rejected, per reason) to XCom. See docs/ingestion.md
    for the full policy.

    :param topic: The Kafka topic to read. (templated)
    :param lake_url: The lake root: a path, a `file://` URL or an object-store URL such as `s3://bucket/prefix`
        (credentials from the standard AWS variables). (templated)
    :param dataset: Dataset written, e.g. `raw/ratings`. (templated)
    :param rejected_dataset: Dataset of rejected records, e.g. `rejected/ratings`. (templated)
    :param schema: The declared schema of the topic's events, e.g. `lakeloop.ingest.schema.RATINGS_SCHEMA`.
    :param kafka_conn_id: Airflow connection of the brokers; None reads `LAKELOOP_KAFKA_BOOTSTRAP`.
    :param max_rejected_fraction: Above this rejected/read ratio the task fails without retrying (the
        rejects are still published); it signals an upstream schema change, which a retry cannot fix.
    :param allowed_lateness: How far before the interval start an event time may lie and still be kept.
    :param allowed_earliness: How far past the interval end an event time may lie and still be kept.
    :param options: Further `IngestOptions` (timeouts, chunk sizes); the three above override it.
    """

    template_fields: Sequence[str] = ("topic", "lake_url", "dataset", "rejected_dataset")
    ui_color = "#e8f4fa"

    def __init__(
        self,
        *,
        topic: str,
        lake_url: str,
        dataset: str,
        rejected_dataset: str,
        schema: RecordSchema,
        kafka_conn_id: str | None = None,
        max_rejected_fraction: float | None = None,
        allowed_lateness: timedelta | None = None,
        allowed_earliness: timedelta | None = None,
        options: IngestOptions | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.topic = topic
        self.lake_url = lake_url
        self.dataset = dataset
        self.rejected_dataset = rejected_dataset
        self.schema = schema
        self.kafka_conn_id = kafka_conn_id
        overrides = {name: value for name, value in (("max_rejected_fraction", max_rejected_fraction),
                                                     ("allowed_lateness", allowed_lateness),
                                                     ("allowed_earliness", allowed_earliness)) if value is not None}
        self.options = replace(options or IngestOptions(), **overrides)

    def execute(self, context: Any) -> dict[str, Any]:
        """Ingest the run's data interval and return its counts."""
        start, end = context.get("data_interval_start"), context.get("data_interval_end")
        if start is None or end is None or end <= start:
            raise AirflowFailException(
                f"{self.task_id} needs a non-empty data interval, got [{start}, {end}): schedule the DAG with a "
                "timetable whose data intervals are real days (e.g. DeltaDataIntervalTimetable(timedelta(days=1)))")
        hook = KafkaSliceHook(kafka_conn_id=self.kafka_conn_id)
        try:
            result = hook.ingest_interval(self.topic, self.lake_url, start, end, schema=self.schema,
                                          dataset=self.dataset, rejected_dataset=self.rejected_dataset,
                                          options=self.options)
        except RejectionRateExceeded as error:
            raise AirflowFailException(str(error)) from error
        self.log.info("%s for %s: read %d, written %d, rejected %d %s", self.topic, result.day, result.read,
                      result.written, result.rejected, result.rejected_by_reason or "")
        return result.counts()
