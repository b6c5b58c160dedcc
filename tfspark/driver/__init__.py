"""What runs on the submitting machine and in the spark-submit driver: the `tfspark-submit` CLI (`submit`), the
driver application (`application`), the barrier job (`runner`) and its Parquet feed planning (`feed_plan`).
See docs/tfspark.md.
"""
