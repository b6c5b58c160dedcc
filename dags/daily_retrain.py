"""
### daily_retrain

The recommender's daily retraining loop. The run for day D processes data interval [D, D+1) UTC and
writes partitions `dt=D` in the lake; tasks talk through the lake, so any one of them can be rerun alone.

`ingest_ratings` (Kafka → `raw/ratings`) → `spark_etl` (→ `curated/ratings`) → `spark_features`
(→ `features`) → `train_model` (TensorFlow on Spark, pool `gpu_pool`, checkpoints in
`checkpoints/`) → `evaluate_model` (new model vs champion vs baselines; the quality gate) →
`register_model` (one MLflow run per DAG run; alias `champion` if promoted, else `challenger`) →
`batch_predict` (the champion's top-10 unseen movies per user → `predictions/`, the Asset
`lakeloop_predictions`).

**Operations.** Every task retries (`LAKELOOP_TASK_RETRIES`, default 2) with exponential backoff from
`LAKELOOP_RETRY_DELAY_SECONDS` (default 120 s, doubling, at most 30 min) and has an `execution_timeout`.
One scheduled run at a time (`max_active_runs=1`); a backfill runs several days at once (its own
`--max-active-runs`, default 10), so each task runs for one day at a time (`max_active_tis_per_dag=1`) and
in day order (`depends_on_past`): day D reads what earlier days wrote (ETL dedup, feature window, the
champion), so D+1's `evaluate_model` also waits for D's `register_model`, and D+1's `register_model` for
D's `batch_predict` (`wait_for_downstream`): a backfill reproduces the daily runs while the days overlap
in a pipeline. Spark applications share the pool `spark_pool` (2 slots) and training `gpu_pool` (1 slot).
A task that fails after its last retry, a run that fails for another reason, and a run not finished
`LAKELOOP_RUN_DEADLINE_MINUTES` after it was queued (360 under the scheduler of `lakeloop ui` and compose;
off under `dags test`, see `lakeloop/operations.py`) are alerted by `LakeloopNotifier` (webhook
`LAKELOOP_ALERT_WEBHOOK`, email via the `smtp_default` connection).

**Run params** (trigger with config, or a backfill's config): `spark_etl`'s data-quality thresholds and the
severity of each check (`fail` or `warn`), to accept a real change in the data; see docs/etl-and-features.md.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, Asset, DeadlineAlert, DeadlineReference, Param, SyncCallback, task

from lakeloop.config import load_settings
from lakeloop.data_quality import DEFAULT_MIN_ROWS, FAIL, SEVERITIES
from lakeloop.ingest.schema import RATINGS_SCHEMA
from lakeloop.names import GPU_POOL, PREDICTIONS, RAW_RATINGS, REJECTED_RATINGS, SPARK_POOL, run_directory_name
from lakeloop.operations import load_operations
from lakeloop.spark_conf import spark_submit_conf
from lakeloop.timetable import DailyIntervalTimetable
from operators.champion_spark_submit import ChampionSparkSubmitOperator
from operators.kafka_to_lake import KafkaToLakeOperator
from operators.links import MLflowModelVersionLink, MLflowRegisteredModelLink, MLflowRunLink, SparkUILink
from operators.notifiers import LakeloopNotifier
from operators.tf_on_spark import TFOnSparkOperator

settings = load_settings()
# The s3a connector's jars for an S3 lake: they must reach spark-submit, before the JVM starts (lakeloop.spark_conf).
LAKE_SPARK_CONF = spark_submit_conf(settings.lake_url)
operations = load_operations()
alert = LakeloopNotifier()
DAY = "{{ data_interval_start | ds }}"
JOBS = settings.project_dir / "jobs"
WINDOW_DAYS = 30
PREDICTIONS_ASSET = Asset(name="lakeloop_predictions", uri=f"{settings.lake_url}/{PREDICTIONS}")

with DAG(
    dag_id="daily_retrain",
    description="Kafka → lake → Spark → TensorFlow on Spark → MLflow → batch predictions, once a day",
    schedule=DailyIntervalTimetable(),
    start_date=datetime(2026, 11, 1, tzinfo=UTC),
    catchup=True,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["lakeloop", "recommender"],
    params={
        "max_rating_drift": Param(settings.max_rating_drift, type="number", minimum=0, maximum=1,
                                  description="spark_etl: largest total variation distance of the day's rating "
                                              "histogram from the history's"),
        "rating_drift_severity": Param(FAIL, enum=list(SEVERITIES),
                                       description="spark_etl: fail the day or warn when the drift is larger"),
        "min_rows": Param(DEFAULT_MIN_ROWS, type="integer", minimum=0,
                          description="spark_etl: fewest raw rows the day must hold"),
        "empty_input_severity": Param(FAIL, enum=list(SEVERITIES),
                                      description="spark_etl: fail the day or warn when it has fewer rows"),
    },
    user_defined_filters={"run_directory": run_directory_name},
    on_failure_callback=alert,
    deadline=DeadlineAlert(reference=DeadlineReference.DAGRUN_QUEUED_AT, interval=operations.run_deadline,
                           callback=SyncCallback(LakeloopNotifier)) if operations.run_deadline else None,
    default_args={
        "owner": "lakeloop",
        **operations.retry_arguments(),
        "execution_timeout": timedelta(minutes=30),
        "max_active_tis_per_dag": 1,
        "depends_on_past": True,
        "on_failure_callback": alert,
    },
) as dag:
    ingest_ratings = KafkaToLakeOperator(
        task_id="ingest_ratings",
        topic=settings.ratings_topic,
        lake_url=settings.lake_url,
        dataset=RAW_RATINGS,
        rejected_dataset=REJECTED_RATINGS,
        schema=RATINGS_SCHEMA,
        kafka_conn_id=None,
        execution_timeout=timedelta(minutes=20),
    )
    spark_etl = SparkSubmitOperator(
        task_id="spark_etl",
        application=str(JOBS / "etl.py"),
        application_args=["--lake", settings.lake_url, "--day", DAY,
                          "--max-rating-drift", "{{ params.max_rating_drift }}",
                          "--rating-drift-severity", "{{ params.rating_drift_severity }}",
                          "--min-rows", "{{ params.min_rows }}",
                          "--empty-input-severity", "{{ params.empty_input_severity }}"],
        name="lakeloop-etl",
        conf=LAKE_SPARK_CONF,
        pool=SPARK_POOL,
        durable=True,
    )
    spark_features = SparkSubmitOperator(
        task_id="spark_features",
        application=str(JOBS / "features.py"),
        application_args=["--lake", settings.lake_url, "--day", DAY, "--window-days", str(WINDOW_DAYS)],
        name="lakeloop-features",
        conf=LAKE_SPARK_CONF,
        pool=SPARK_POOL,
        durable=True,
    )
    train_model = TFOnSparkOperator(
        task_id="train_model",
        trainer="lakeloop.fm_trainer:FMTrainer",
        checkpoint_dir=f"{settings.lake_url}/checkpoints/{settings.model_name}/{{{{ run_id | run_directory }}}}",
        output_dir=f"{settings.lake_url}/models/{settings.model_name}/dt={DAY}",
        trainer_args={"lake": settings.lake_url, "day": DAY, "model_name": settings.model_name},
        gpus_per_worker=settings.gpus_per_worker,
        checkpoint_seconds=settings.checkpoint_seconds,
        conf=LAKE_SPARK_CONF,
        pool=GPU_POOL,
        execution_timeout=timedelta(hours=2),
    )

    @task(execution_timeout=timedelta(minutes=20), wait_for_downstream=True)
    def evaluate_model(data_interval_start: datetime | None = None) -> dict:
        """The day's model, the champion and the baselines on the evaluation set; the quality gate's decision."""
        from lakeloop.tasks import evaluate_day

        return evaluate_day(settings, data_interval_start.date())

    @task(execution_timeout=timedelta(minutes=20), wait_for_downstream=True)
    def register_model(dag_run=None, data_interval_start: datetime | None = None,
                       data_interval_end: datetime | None = None) -> dict:
        """Register the day's model in the DAG run's MLflow run; alias `champion` or `challenger` per the gate."""
        from lakeloop.tasks import register_day

        return register_day(settings, data_interval_start.date(), dag_run.dag_id, dag_run.run_id,
                            data_interval_start, data_interval_end)

    batch_predict = ChampionSparkSubmitOperator(
        task_id="batch_predict",
        application=str(JOBS / "batch_predict.py"),
        application_args=["--lake", settings.lake_url, "--day", DAY, "--model-name", settings.model_name,
                          "--generated-at", "{{ data_interval_end | ts }}"],
        name="lakeloop-batch-predict",
        conf=LAKE_SPARK_CONF,
        model_name=settings.model_name,
        tracking_uri=settings.mlflow_tracking_uri,
        pool=SPARK_POOL,
        durable=True,
        outlets=[PREDICTIONS_ASSET],
        execution_timeout=timedelta(hours=1),
    )

    registered = register_model()
    registered.operator.operator_extra_links = (MLflowModelVersionLink(), MLflowRunLink())
    train_model.operator_extra_links = (MLflowRegisteredModelLink(), SparkUILink())
    for spark_task in (spark_etl, spark_features, batch_predict):
        spark_task.operator_extra_links = (SparkUILink(),)

    ingest_ratings >> spark_etl >> spark_features >> train_model >> evaluate_model() >> registered >> batch_predict
