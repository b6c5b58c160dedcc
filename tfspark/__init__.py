"""TensorFlow training inside a Spark application: subclass `TFSparkTrainer`, run it with `tfspark-submit` (or
`TFOnSparkOperator` from Airflow). `driver/` runs on the submitting machine and the Spark driver, `task/` in the
barrier tasks. Importing this package imports neither TensorFlow nor pyspark. See docs/tfspark.md.
"""

from tfspark.context import TrainContext
from tfspark.trainer import TFSparkTrainer

__all__ = ["TFSparkTrainer", "TrainContext"]
