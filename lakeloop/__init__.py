"""lakeloop: the daily retraining loop of a recommender, from Kafka to the lake to MLflow."""

__version__ = "0.1.0"
