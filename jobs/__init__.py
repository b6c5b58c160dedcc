"""Spark job entry points run by spark-submit (each module has a `main`), and the FM trainer."""
