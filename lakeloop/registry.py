"""The MLflow side of a day's model: one MLflow run per DAG run, the registered version, its alias.

See docs/evaluation-and-registry.md (registry).
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import date
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse

from lakeloop.evaluation import Champion
from lakeloop.gate import CHAMPION, GateDecision
from lakeloop.lake import Lake, as_lake
from lakeloop.models import EVALUATION, MODEL_FILE, REGISTRATION, REPORT_DIR, TRAIN_SUMMARY, ModelDirectory
from lakeloop.towers import TOWERS_FILE, FMTowers, UnknownModelError

MODEL_PACKAGES = ("tensorflow", "numpy", "cloudpickle")
log = logging.getLogger(__name__)
DAY_TAG = "lakeloop.day"
GATE_ALIAS_TAG = "lakeloop.gate.alias"
SHA_TAG = "lakeloop.model_sha256"
DAG_RUN_TAG = "lakeloop.dag_run"
SAVED_MODEL_DIR = "saved_model"
TOWERS_DIR = "towers"


@dataclass(frozen=True)
class RunLineage:
    """Where a model comes from: the Airflow DAG run that trained it, what it read and wrote, the code."""

    dag_id: str
    run_id: str
    data_interval_start: str
    data_interval_end: str
    features_path: str
    predictions_path: str
    git_commit: str

    @property
    def dag_run(self) -> str:
        """The DAG run's identity, `<dag id>/<run id>`: the key of its MLflow run."""
        return f"{self.dag_id}/{self.run_id}"

    def tags(self) -> dict[str, str]:
        """The lineage as MLflow tags (the git commit under MLflow's own source tag)."""
        tags = {f"lakeloop.{key}": value for key, value in asdict(self).items() if key != "git_commit"}
        return {**tags, DAG_RUN_TAG: self.dag_run, "mlflow.source.git.commit": self.git_commit}


def git_commit(directory: Path) -> str:
    """The commit checked out in `directory`, or `unknown` outside a git work tree."""
    try:
        result = subprocess.run(["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip()


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _use_experiment(client, name: str, lake: Lake) -> str:
    """Make `name` the active experiment and return its id; a new one on a local store keeps its artifacts
    in the lake, `<lake>/mlflow-artifacts` (`file://` or `s3://`: without an artifact location, MLflow on SQLite
    writes them to `./mlruns` of whatever directory the task runs in)."""
    import mlflow

    if client.get_experiment_by_name(name) is None and urlparse(mlflow.get_tracking_uri()).scheme in ("sqlite", ""):
        client.create_experiment(name, artifact_location=lake.uri(lake.path("mlflow-artifacts")))
    return mlflow.set_experiment(name).experiment_id


@dataclass(frozen=True)
class AliasedVersion:
    """The registered version an alias points to, and the day whose data trained it (tag `lakeloop.day`)."""

    version: str
    day: date


class RegistryUnavailableError(RuntimeError):
    """The registry did not answer (database locked, server down...): whether a version exists is unknown, so the
    task fails (and retries) instead of reading the outage as "no champion"."""


def _is_absent(error: Exception) -> bool:
    """Whether an MLflow error says the alias or the registered model does not exist (and nothing else)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST, ErrorCode

    if not isinstance(error, MlflowException):
        return False
    if error.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
        return True
    return error.error_code == ErrorCode.Name(INVALID_PARAMETER_VALUE) and "alias" in error.message \
        and "not found" in error.message


def aliased_version(model_name: str, alias: str, tracking_uri: str | None = None) -> AliasedVersion | None:
    """The version behind `alias` of `model_name`, or None if the alias (or the model) does not exist; raises
    `RegistryUnavailableError` when the registry cannot answer."""
    import mlflow
    from mlflow import MlflowClient

    try:
        version = MlflowClient(tracking_uri=tracking_uri).get_model_version_by_alias(model_name, alias)
    except Exception as error:
        if not _is_absent(error):
            where = tracking_uri or mlflow.get_tracking_uri()
            raise RegistryUnavailableError(
                f"the MLflow registry at {where} could not say which version of {model_name} is {alias!r} "
                f"({type(error).__name__}: {error}); failing rather than acting as if there were none") from error
        log.info("no %s version of %s: %s", alias, model_name, error)
        return None
    return AliasedVersion(version=str(version.version), day=date.fromisoformat(version.tags[DAY_TAG]))


def promoted_before(model_name: str, day: date, tracking_uri: str | None = None) -> AliasedVersion | None:
    """The newest version the quality gate promoted among those trained on days before `day` (tag `lakeloop.day`),
    or None if there is none; raises `RegistryUnavailableError` when the registry cannot answer.

    The champion as of the day before: a rerun of `day` finds the same version whatever was promoted since."""
    import mlflow
    from mlflow import MlflowClient

    try:
        versions = MlflowClient(tracking_uri=tracking_uri).search_model_versions(f"name = '{model_name}'")
    except Exception as error:
        where = tracking_uri or mlflow.get_tracking_uri()
        raise RegistryUnavailableError(
            f"the MLflow registry at {where} could not list the versions of {model_name} "
            f"({type(error).__name__}: {error}); failing rather than acting as if there were none") from error
    earlier = [(date.fromisoformat(version.tags[DAY_TAG]), int(version.version)) for version in versions
               if version.tags.get(GATE_ALIAS_TAG) == CHAMPION and DAY_TAG in version.tags
               and date.fromisoformat(version.tags[DAY_TAG]) < day]
    if not earlier:
        return None
    newest_day, newest = max(earlier)
    return AliasedVersion(version=str(newest), day=newest_day)


def load_champion(model_name: str, tracking_uri: str) -> Champion | None:
    """The version behind the `champion` alias with its training day and model, or None if there is none."""
    import mlflow

    champion = aliased_version(model_name, CHAMPION, tracking_uri)
    if champion is None:
        return None
    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.tensorflow.load_model(f"models:/{model_name}/{champion.version}")
    return Champion(version=champion.version, day=champion.day, model=model)


def _log_training_curves(client, run_id: str, summary: dict) -> None:
    """The training job's per-epoch loss and throughput as step-indexed metrics (step = epoch), which the MLflow UI
    draws as curves; once per run (a rerun of the registration would append the same points again)."""
    from mlflow.entities import Metric

    timestamp = int(time.time() * 1000)
    metrics = [Metric(f"train_{name}", float(epoch[name]), timestamp, int(epoch["epoch"]))
               for epoch in summary.get("epoch_metrics") or [] for name in ("loss", "examples_per_second")]
    if metrics and not client.get_metric_history(run_id, "train_loss"):
        client.log_batch(run_id, metrics=metrics)


def _log_model(model_path: Path, model_name: str, lake: Lake, day: date):
    """Log and register the Keras model with a signature and an input example from the evaluation set."""
    import keras
    import mlflow
    from mlflow.models import infer_signature

    from lakeloop.features import model_inputs, read_features

    model = keras.saving.load_model(model_path)
    example = model_inputs(read_features(lake, day, "eval").slice(0, 5))
    signature = infer_signature(example, model.predict(example, verbose=0))
    _log_saved_model(model)
    _log_towers(model)
    return mlflow.tensorflow.log_model(model, name="model", registered_model_name=model_name, signature=signature,
                                       input_example=example, pip_requirements=model_requirements())


def _log_saved_model(model) -> None:
    """The model as a TensorFlow SavedModel with a `serving_default` signature, in the run's `saved_model/`
    artifacts: what TF Serving and `tf.saved_model.load` take, without Keras or lakeloop code."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="lakeloop-saved-model-") as scratch:
        path = os.path.join(scratch, SAVED_MODEL_DIR)
        model.export(path, format="tf_saved_model", verbose=False)
        mlflow.log_artifacts(path, SAVED_MODEL_DIR)


def _log_towers(model) -> None:
    """The model's user and item towers (`lakeloop.towers.FMTowers`) in the run's `towers/` artifacts, so batch
    prediction ranks without TensorFlow; none for a model whose graph `lakeloop.towers` does not know (it is scored
    pair by pair). The evaluation's ranking metrics check the same weights' towers against the model on sample pairs."""
    import mlflow

    try:
        towers = FMTowers.of(model)
    except UnknownModelError as error:
        log.info("no towers logged: %s", error)
        return
    with tempfile.TemporaryDirectory(prefix="lakeloop-towers-") as scratch:
        path = os.path.join(scratch, TOWERS_FILE)
        towers.save(path)
        mlflow.log_artifact(path, TOWERS_DIR)


def registered_towers(model_name: str, version: str, tracking_uri: str | None = None) -> FMTowers | None:
    """The towers logged with the registered version, or None if it has none (registered before lakeloop logged
    them, or a graph `lakeloop.towers` does not know); a registry or store that cannot answer raises."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    run_id = client.get_model_version(model_name, version).run_id
    wanted = f"{TOWERS_DIR}/{TOWERS_FILE}"
    if not run_id or wanted not in {artifact.path for artifact in client.list_artifacts(run_id, TOWERS_DIR)}:
        return None
    with tempfile.TemporaryDirectory(prefix="lakeloop-towers-") as scratch:
        return FMTowers.load(client.download_artifacts(run_id, wanted, scratch))


def features_version_tags(summary: dict, evaluation: dict) -> dict[str, str]:
    """The versions of the feature tables (Delta) that trained and evaluated the model, as MLflow run tags
    (`lakeloop.trained_on.<table>`, `lakeloop.evaluated_on.<table>`): `lakeloop lake read features/<table> --day D
    --version N` reads those rows back while VACUUM's retention keeps them."""
    return {f"lakeloop.{role}.{table}": str(version)
            for role, report in (("trained_on", summary), ("evaluated_on", evaluation))
            for table, version in (report.get("features_versions") or {}).items()}


def model_requirements() -> list[str]:
    """What serving the model needs, pinned to this environment: the list MLflow infers for it (plus mlflow, which
    it adds itself), declared because inferring it loads the model in a subprocess (~13 s per registration)."""
    return [f"{package}=={metadata.version(package)}" for package in MODEL_PACKAGES]


def register_model(lake: Lake | Path | str, model_name: str, day: date, tracking_uri: str,
                   lineage: RunLineage) -> dict:
    """Log the day's model in its DAG run's MLflow run, register it and alias it as the quality gate decided.

    MLflow logs local files: on an object store the model and the evaluation report are downloaded into a
    temporary directory first."""
    import mlflow
    from mlflow import MlflowClient

    lake = as_lake(lake)
    directory = ModelDirectory.of(lake, model_name, day)
    evaluation = directory.read_json(EVALUATION)
    summary = directory.read_json(TRAIN_SUMMARY)
    decision = GateDecision.from_json(evaluation["gate"])
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    experiment_id = _use_experiment(client, model_name, lake)
    runs = client.search_runs([experiment_id], f"tags.`{DAG_RUN_TAG}` = '{lineage.dag_run}'", max_results=1)
    run_id = runs[0].info.run_id if runs else None
    with directory.local_copy(MODEL_FILE, REPORT_DIR) as local:
        sha = file_sha256(local / MODEL_FILE)
        versions = [v for v in client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
                    if v.tags.get(SHA_TAG) == sha] if run_id else []
        with mlflow.start_run(run_id=run_id, run_name=f"{model_name}-{day}", tags=lineage.tags()) as run:
            run_id = run.info.run_id
            mlflow.log_params({key: value for key, value in summary.items() if not isinstance(value, dict | list)})
            mlflow.log_metrics({key: float(value) for key, value in evaluation.items()
                                if isinstance(value, int | float) and not isinstance(value, bool)})
            mlflow.set_tags({f"lakeloop.gate.{key}": str(value) for key, value in decision.to_json().items()
                             if value is not None})
            mlflow.set_tags(features_version_tags(summary, evaluation))
            mlflow.log_artifacts(str(local / REPORT_DIR), REPORT_DIR)
            mlflow.log_dict(evaluation, f"{REPORT_DIR}/{EVALUATION}")
            mlflow.log_dict(summary, TRAIN_SUMMARY)
            _log_training_curves(client, run_id, summary)
            if versions:
                version = str(versions[0].version)
                log.info("%s for %s is already version %s (DAG run %s)", model_name, day, version, lineage.dag_run)
            else:
                version = str(_log_model(local / MODEL_FILE, model_name, lake, day).registered_model_version)
    if not versions:
        for key, value in {DAY_TAG: str(day), SHA_TAG: sha, DAG_RUN_TAG: lineage.dag_run,
                           GATE_ALIAS_TAG: decision.alias}.items():
            client.set_model_version_tag(model_name, version, key, value)
    client.set_registered_model_alias(model_name, decision.alias, version)
    champion = version if decision.promote else decision.champion_version
    log.info("%s version %s → alias %s (%s); champion is version %s", model_name, version, decision.alias,
             decision.reason, champion)
    registration = {"model_name": model_name, "version": version, "alias": decision.alias, "run_id": run_id,
                    "day": str(day), "model_sha256": sha, "promoted": decision.promote,
                    "champion_version": champion, "dag_run": lineage.dag_run,
                    "model_uri": f"models:/{model_name}/{version}"}
    directory.write_json(REGISTRATION, registration)
    return registration
