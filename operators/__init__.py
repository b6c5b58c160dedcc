"""Airflow operators of lakeloop (no TensorFlow or pyspark imports at module level: DAGs import these)."""
