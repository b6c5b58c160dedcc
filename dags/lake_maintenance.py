"""
### lake_maintenance

Weekly upkeep of the lake's Delta tables (`predictions`, `embeddings/users`, `embeddings/items`:
`lakeloop.names.DELTA_TABLES`), one mapped task `maintain_table` per table, each on its own:
every day (`dt` partition) that holds more than one data file is compacted into one file (a commit per day,
the rows unchanged), then VACUUM deletes the files that no version younger than
`LAKELOOP_DELTA_RETENTION_HOURS` (default 168 h, Delta's 7 days) references: the files reruns and compaction
replaced, and those of writers killed before their commit. Versions older than the retention can no longer be
read afterwards (`lakeloop lake read --version` says so); see docs/deployment.md ("Delta tables").

**Operations.** Tasks retry like `daily_retrain`'s (`LAKELOOP_TASK_RETRIES`, `LAKELOOP_RETRY_DELAY_SECONDS`,
exponential backoff) and a failure is alerted by `LakeloopNotifier`. A write of the table (`batch_predict`) that
commits while a day is being compacted fails the compaction (`ConcurrentWriteError`, nothing changed) and the
retry compacts it.
One run at a time, no catch-up: a missed week is done by the next run. By hand:
`lakeloop airflow dags test lake_maintenance` (docs/operations.md).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, task

from lakeloop.config import load_settings
from lakeloop.names import DELTA_TABLES
from lakeloop.operations import load_operations
from operators.notifiers import LakeloopNotifier

settings = load_settings()
alert = LakeloopNotifier()

with DAG(
    dag_id="lake_maintenance",
    description="Compaction and VACUUM of the lake's Delta tables, once a week",
    schedule="@weekly",
    start_date=datetime(2026, 11, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["lakeloop", "lake"],
    on_failure_callback=alert,
    default_args={
        "owner": "lakeloop",
        **load_operations().retry_arguments(),
        "execution_timeout": timedelta(hours=1),
        "on_failure_callback": alert,
    },
) as dag:

    @task
    def maintain_table(dataset: str) -> dict:
        """Compact the Delta table's days of several files, then VACUUM what no version within the retention
        references; return what was done (`lakeloop.delta_maintenance.maintain_table`)."""
        from lakeloop.delta_maintenance import maintain_table as compact_and_vacuum
        from lakeloop.lake import as_lake

        return compact_and_vacuum(as_lake(settings.lake_url), dataset, settings.delta_retention_hours)

    maintain_table.expand(dataset=list(DELTA_TABLES))
