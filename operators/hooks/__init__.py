"""Airflow hooks of lakeloop: the I/O side of its operators (no heavy imports at module level)."""
