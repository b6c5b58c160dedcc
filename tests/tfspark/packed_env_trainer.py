"""The tiny trainer, reporting which Python its barrier task ran on: the packed-environment test's trainer.

`train` adds to its result (and so to the training summary) the task's `sys.executable` and `sys.prefix`, and what
`packed_env_marker.WHERE` says: a module that exists only in the packed environment the test builds (None when
the import fails, i.e. the task did not run on that environment's python).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from tiny_trainer import TinyRatingsTrainer

from tfspark import TrainContext

MARKER_MODULE = "packed_env_marker"


class PackedEnvTrainer(TinyRatingsTrainer):
    """`TinyRatingsTrainer` whose result also says which interpreter and environment trained it."""

    def train(self, dataset: Any, ctx: TrainContext) -> dict[str, Any]:
        """Train as the tiny trainer does; add the task's interpreter, prefix and the marker module's value."""
        try:
            marker = importlib.import_module(MARKER_MODULE).WHERE
        except ModuleNotFoundError:
            marker = None
        result = super().train(dataset, ctx)
        return {**result, "python_executable": sys.executable, "python_prefix": sys.prefix, "packed_env_marker": marker}
