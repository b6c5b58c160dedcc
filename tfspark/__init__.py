"""TensorFlow training inside a Spark application: Arrow feed, barrier rendezvous, resumable checkpoints.

Subclass `TFSparkTrainer` and run it with `tfspark-submit` (or `TFOnSparkOperator` from Airflow).
Importing this package imports neither TensorFlow nor pyspark.
"""

from tfspark.trainer import TFSparkTrainer, TrainContext

__all__ = ["TFSparkTrainer", "TrainContext"]
