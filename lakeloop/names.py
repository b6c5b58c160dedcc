"""Names the DAG, the operators and the jobs share: the lake's datasets and the Airflow pools.

Plain strings, no imports: the DAG reads them at parse time.
"""

RAW_RATINGS = "raw/ratings"
REJECTED_RATINGS = "rejected/ratings"
CURATED_RATINGS = "curated/ratings"
PREDICTIONS = "predictions"
MOVIES = "reference/movies"  # the movie catalog: a reference dataset, not partitioned by day

GPU_POOL = "gpu_pool"
SPARK_POOL = "spark_pool"
