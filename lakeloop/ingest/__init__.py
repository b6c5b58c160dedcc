"""Kafka → lake ingestion of a data interval; see docs/ingestion.md.

Empty on purpose: import the module you need, so `schema` and `options` stay free of numpy and pyarrow.
"""
