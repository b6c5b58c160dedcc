"""The chief's TensorBoard event files, beside the checkpoints: what people watch while a run trains."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from tfspark.storage import RemoteDirectory

TENSORBOARD_DIR = "tensorboard"


class TensorBoardLog:
    """Scalars (loss, examples/s, learning rate) written as TensorBoard events to `<checkpoint_dir>/tensorboard/`.

    On an object store the events are written to a local directory and uploaded at every `flush` (TensorFlow's
    file writer reaches local files only without tensorflow-io); a resumed run adds its own event file, which
    TensorBoard shows as the same run's continuation.
    """

    def __init__(self, checkpoint_dir: str) -> None:
        import tensorflow as tf

        self.url = f"{checkpoint_dir.rstrip('/')}/{TENSORBOARD_DIR}"
        self._remote = RemoteDirectory.for_url(self.url)
        self._local_dir = tempfile.mkdtemp(prefix="tfspark-tensorboard-") if self._remote else self.url
        self._writer = tf.summary.create_file_writer(self._local_dir)

    def scalars(self, step: int, values: dict[str, float | None]) -> None:
        """Record `values` at `step` (None values are left out)."""
        import tensorflow as tf

        with self._writer.as_default(step=step):
            for name, value in values.items():
                if value is not None:
                    tf.summary.scalar(name, value)

    def flush(self) -> None:
        """Make what was recorded readable (and, on an object store, upload it)."""
        self._writer.flush()
        if self._remote:
            for name in sorted(os.listdir(self._local_dir)):
                self._remote.put(os.path.join(self._local_dir, name), name)

    def close(self) -> None:
        """Flush and release the writer."""
        self.flush()
        self._writer.close()
        if self._remote:
            shutil.rmtree(self._local_dir, ignore_errors=True)


def current_learning_rate(optimizer: Any) -> float | None:
    """The optimizer's learning rate at its current step (a schedule evaluated), or None if it has none."""
    try:
        return float(optimizer.learning_rate)
    except (AttributeError, TypeError, ValueError):
        return None
