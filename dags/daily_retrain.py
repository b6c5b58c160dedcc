"""
### daily_retrain

The recommender's daily retraining loop. The run for day D processes data interval [D, D+1) UTC and
writes partitions `dt=D` in the lake; tasks talk through the lake, so any one of them can be rerun alone.

`ingest_ratings` (Kafka → `raw/ratings`) → `spark_etl` (→ `curated/ratings`) → `spark_features`
(→ `features/ratings`) → `train_model` (TensorFlow on Spark, pool `gpu_pool`, checkpoints in
`checkpoints/`) → `evaluate_model` (RMSE vs the global-mean baseline) → `register_model` (MLflow,
alias `champion`) → `batch_predict` (top-10 per user → `predictions/`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, task

from lakeloop.config import load_settings
from lakeloop.ingest import RATINGS_SCHEMA
from lakeloop.timetable import DailyIntervalTimetable
from operators.kafka_to_lake import KafkaToLakeOperator
from operators.tf_on_spark import TFOnSparkOperator

settings = load_settings()
DAY = "{{ data_interval_start | ds }}"
JOBS = settings.project_dir / "jobs"
WINDOW_DAYS = 30

with DAG(
    dag_id="daily_retrain",
    description="Kafka → lake → Spark → TensorFlow on Spark → MLflow → batch predictions, once a day",
    schedule=DailyIntervalTimetable(),
    start_date=datetime(2026, 11, 1, tzinfo=UTC),
    catchup=True,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["lakeloop", "recommender"],
    default_args={"owner": "lakeloop", "retries": 2, "retry_delay": timedelta(minutes=1)},
) as dag:
    ingest_ratings = KafkaToLakeOperator(
        task_id="ingest_ratings",
        topic=settings.ratings_topic,
        lake_url=settings.lake_url,
        dataset="raw/ratings",
        rejected_dataset="rejected/ratings",
        schema=RATINGS_SCHEMA,
        kafka_conn_id=None,
    )
    spark_etl = SparkSubmitOperator(
        task_id="spark_etl",
        application=str(JOBS / "etl.py"),
        application_args=["--lake", settings.lake_url, "--day", DAY],
        name="lakeloop-etl",
    )
    spark_features = SparkSubmitOperator(
        task_id="spark_features",
        application=str(JOBS / "features.py"),
        application_args=["--lake", settings.lake_url, "--day", DAY],
        name="lakeloop-features",
    )
    train_model = TFOnSparkOperator(
        task_id="train_model",
        trainer="jobs.fm_trainer:FMTrainer",
        num_workers=2,
        checkpoint_dir=f"{settings.lake_url}/checkpoints/{settings.model_name}/{{{{ run_id | replace(':', '_') }}}}",
        output_dir=f"{settings.lake_url}/models/{settings.model_name}/dt={DAY}",
        trainer_args={"lake": settings.lake_url, "day": DAY, "window_days": str(WINDOW_DAYS)},
    )

    @task
    def evaluate_model(data_interval_start: datetime | None = None) -> dict:
        """RMSE of the day's model on the held-out split, next to the global-mean baseline."""
        from lakeloop.tasks import evaluate_day

        return evaluate_day(settings, data_interval_start.date(), WINDOW_DAYS)

    @task
    def register_model(data_interval_start: datetime | None = None) -> dict:
        """Register the day's model in MLflow and alias it `champion`."""
        from lakeloop.tasks import register_day

        return register_day(settings, data_interval_start.date())

    batch_predict = SparkSubmitOperator(
        task_id="batch_predict",
        application=str(JOBS / "batch_predict.py"),
        application_args=["--lake", settings.lake_url, "--day", DAY, "--model-name", settings.model_name,
                          "--window-days", str(WINDOW_DAYS)],
        name="lakeloop-batch-predict",
    )

    (ingest_ratings >> spark_etl >> spark_features >> train_model >> evaluate_model() >> register_model()
     >> batch_predict)
