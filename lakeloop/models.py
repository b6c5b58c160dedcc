"""Where a day's model artefacts live in the lake: `<lake>/models/<model>/dt=YYYY-MM-DD/`, on local disk or on an
object store.

The trainer writes `model.keras` and `train_summary.json` there, evaluation adds `evaluation.json` and its report
(`evaluation/`), registration `registration.json`. Every file goes through `tfspark.storage.RemoteDirectory`, the
trainer's uploader: one PUT per file on an object store, written aside and renamed over on local disk.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from lakeloop.lake import Lake, as_lake, json_bytes, partition_path
from tfspark.storage import RemoteDirectory

MODELS = "models"
MODEL_FILE = "model.keras"
TRAIN_SUMMARY = "train_summary.json"
EVALUATION = "evaluation.json"
REGISTRATION = "registration.json"
REPORT_DIR = "evaluation"


def model_dir(lake: Path, model_name: str, day: date) -> Path:
    """The day's model directory on a local lake (trained model, training summary, evaluation, registration)."""
    return partition_path(lake, f"{MODELS}/{model_name}", day)


def write_json(path: Path, payload: dict) -> None:
    """Write a JSON artefact into a local model directory atomically (aside, then renamed over)."""
    ModelDirectory.at(path.parent).write_json(path.name, payload)


class ModelDirectory:
    """A day's model directory in the lake, read and written the same way on local disk and on object stores.

    What needs local files — Keras loading `model.keras`, matplotlib's plots, MLflow's artifact logging — works in
    `local_copy()`: the directory itself on a local lake; on an object store a temporary directory the needed files
    are downloaded into, whose new files `publish` uploads.
    """

    def __init__(self, files: RemoteDirectory, is_local: bool) -> None:
        self.files = files
        self.is_local = is_local

    @classmethod
    def of(cls, lake: Lake | Path | str, model_name: str, day: date) -> ModelDirectory:
        """The model directory of `model_name` for `day` in the lake (a `Lake`, a local path or a lake URL)."""
        lake = as_lake(lake)
        path = lake.partition(f"{MODELS}/{model_name}", day)
        return cls(RemoteDirectory(lake.uri(path), lake.filesystem, path), lake.is_local)

    @classmethod
    def at(cls, directory: Path) -> ModelDirectory:
        """The model directory at a local path."""
        lake = as_lake(directory)
        return cls(RemoteDirectory(lake.url, lake.filesystem, lake.root), is_local=True)

    @property
    def url(self) -> str:
        """The directory's URL (`file:///…`, `s3://bucket/…`)."""
        return self.files.url

    def exists(self, name: str) -> bool:
        """Whether the file `name` is in the directory."""
        return name in self.files.names()

    def read_json(self, name: str) -> dict:
        """One of the JSON artefacts, naming the upstream task when it is missing."""
        data = self.files.read_bytes(name)
        if data is None:
            raise FileNotFoundError(f"{self.url}/{name} does not exist: run the upstream task for this day first")
        return json.loads(data)

    def write_json(self, name: str, payload: dict) -> str:
        """Write a JSON artefact atomically (one PUT, or aside and renamed over); return where it went."""
        return self.files.write_bytes(name, json_bytes(payload))

    @contextmanager
    def local_copy(self, *names: str) -> Iterator[Path]:
        """A local directory holding the files `names` of the model directory (a name may be a subdirectory, e.g.
        the report's): the directory itself on a local lake; on an object store, a temporary directory they are
        downloaded into, removed on exit."""
        if self.is_local:
            Path(self.files.path).mkdir(parents=True, exist_ok=True)
            yield Path(self.files.path)
            return
        with tempfile.TemporaryDirectory(prefix="lakeloop-model-") as scratch:
            for name in names:
                if self.exists(name):
                    self.files.get(name, str(Path(scratch, name)))
                else:
                    self._download_subdirectory(name, Path(scratch, name))
            yield Path(scratch)

    def publish(self, local: Path, subdirectory: str) -> None:
        """Upload the files of `local/subdirectory` (written in `local_copy()`) into the model directory, one PUT
        each; nothing to do on a local lake, where they were written in place."""
        if self.is_local:
            return
        for path in sorted(Path(local, subdirectory).iterdir()):
            if path.is_file():
                self.files.put(str(path), f"{subdirectory}/{path.name}")

    def _download_subdirectory(self, name: str, target: Path) -> None:
        files = RemoteDirectory(f"{self.url}/{name}", self.files.filesystem, f"{self.files.path}/{name}")
        found = files.names()
        if not found:
            raise FileNotFoundError(f"{self.url}/{name} does not exist: run the upstream task for this day first")
        target.mkdir(parents=True)
        for file_name in found:
            files.get(file_name, str(target / file_name))
