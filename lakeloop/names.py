"""Names the DAG, the operators and the jobs share: the lake's datasets, the Airflow pools, a run's directory.

Plain strings, no imports: the DAG reads them at parse time.
"""

RAW_RATINGS = "raw/ratings"
REJECTED_RATINGS = "rejected/ratings"
CURATED_RATINGS = "curated/ratings"
PREDICTIONS = "predictions"
USER_EMBEDDINGS = "embeddings/users"  # the champion's user tower of the day (lakeloop.towers): user_id, bias, factors
ITEM_EMBEDDINGS = "embeddings/items"  # its item tower over the catalog: item_id, bias, factors
MOVIES = "reference/movies"  # the movie catalog: a reference dataset, not partitioned by day
FEATURES = "features"  # the folder of the day's feature tables (lakeloop.features): `features/<table>`
TRAIN = "train"
EVAL = "eval"
USER_VOCAB = "vocab/users"
ITEM_VOCAB = "vocab/items"
USER_HISTORY = "history/users"
USER_RATED = "history/rated"  # each user's rated movies of the window (train and eval): what predictions leave out
ITEM_HISTORY = "history/items"
# The feature tables in the order the features job commits them: TRAIN last, its commit naming the others' versions.
FEATURE_TABLES = (EVAL, USER_VOCAB, ITEM_VOCAB, USER_HISTORY, USER_RATED, ITEM_HISTORY, TRAIN)
FEATURE_DATASETS = tuple(f"{FEATURES}/{table}" for table in FEATURE_TABLES)
# The datasets: Delta tables (lakeloop.delta), which the DAG lake_maintenance compacts and vacuums.
DELTA_TABLES = (RAW_RATINGS, REJECTED_RATINGS, CURATED_RATINGS, *FEATURE_DATASETS, PREDICTIONS, USER_EMBEDDINGS,
                ITEM_EMBEDDINGS)

GPU_POOL = "gpu_pool"
SPARK_POOL = "spark_pool"


def run_directory_name(run_id: str) -> str:
    """The directory a DAG run's training checkpoints go in (`<lake>/checkpoints/<model>/<this>`): the run id with
    `:` as `_` (Hadoop paths refuse colons). A run id that is not one path segment (empty, `.`, `..`, holding `/`
    or `\\`) is refused: it would name another directory, shared or outside the model's checkpoints."""
    name = run_id.replace(":", "_")
    if name in ("", ".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"run id {run_id!r} cannot name this run's checkpoint directory: it must not be empty, "
                         "'.' or '..', nor hold '/' or '\\'. Trigger the run again with another run id")
    return name
