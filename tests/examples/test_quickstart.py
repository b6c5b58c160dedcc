"""examples/quickstart.ipynb, executed top to bottom on a real Jupyter kernel running this venv's Python, as a new
user would run it: local Spark, one tfspark worker, real TensorFlow."""

from __future__ import annotations

import math
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart.ipynb"
KERNEL_NAME = "lakeloop-venv"
# A hang guard for each cell, not a speed check: the notebook's training cell takes seconds on an idle machine.
CELL_TIMEOUT_SECONDS = 600
# What a new user's shell lacks: the notebook must set these itself (the suite's conftest sets them for pytest).
SET_BY_THE_NOTEBOOK = ("PYSPARK_PYTHON", "SPARK_LOCAL_IP")


def venv_kernel_manager(kernels_dir: Path) -> AsyncKernelManager:
    """A kernel manager whose only kernel spec runs `sys.executable` (this venv), whatever Jupyter set-up the user
    has: the spec is written to `kernels_dir`, the only directory its spec manager searches."""
    write_kernel_spec(kernels_dir / KERNEL_NAME)
    specs = KernelSpecManager(kernel_dirs=[str(kernels_dir)], ensure_native_kernel=False)
    return AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)


def cell_stdout(cell: nbformat.NotebookNode) -> str:
    """Everything a code cell printed to stdout."""
    return "".join(output.text for output in cell.outputs if output.output_type == "stream" and output.name == "stdout")


def test_the_committed_notebook_stores_no_outputs():
    notebook = nbformat.read(QUICKSTART, as_version=4)
    nbformat.validate(notebook)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells
    stored = [cell.id for cell in code_cells if cell.outputs or cell.execution_count is not None]
    assert stored == [], "clear the outputs before committing (Jupyter: Edit > Clear Outputs of All Cells)"


@pytest.mark.slow
def test_the_quickstart_notebook_runs_top_to_bottom_and_trains(tmp_path: Path):
    notebook = nbformat.read(QUICKSTART, as_version=4)
    workdir = tmp_path / "work"
    workdir.mkdir()
    kernel_manager = venv_kernel_manager(tmp_path / "kernels")
    client = NotebookClient(
        notebook,
        km=kernel_manager,
        kernel_name=KERNEL_NAME,
        timeout=CELL_TIMEOUT_SECONDS,
        startup_timeout=CELL_TIMEOUT_SECONDS,
        resources={"metadata": {"path": str(workdir)}},
    )
    kernel_env = {key: value for key, value in os.environ.items() if key not in SET_BY_THE_NOTEBOOK}
    kernel_env["TMPDIR"] = str(tmp_path)  # the notebook's run directory (tempfile.mkdtemp) lands in tmp_path
    # A failing cell raises CellExecutionError naming the cell and its traceback; cleanup_kc stops the kernel
    # (and with it the Spark JVM it started) whatever happens.
    client.execute(env=kernel_env, cleanup_kc=True)

    assert kernel_manager.kernel_spec.argv[0] == sys.executable
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code_cells), "every code cell ran"
    errors = [cell.id for cell in code_cells if any(output.output_type == "error" for output in cell.outputs)]
    assert errors == []

    [summary_cell] = [cell for cell in code_cells if "training-summary" in cell.metadata.get("tags", [])]
    printed = cell_stdout(summary_cell)
    global_step = re.search(r"^global_step\s+(\d+)$", printed, re.MULTILINE)
    loss = re.search(r"^loss\s+(\S+)$", printed, re.MULTILINE)
    assert global_step and loss, f"the summary cell printed no global_step/loss lines:\n{printed}"
    assert int(global_step.group(1)) > 0
    assert math.isfinite(float(loss.group(1)))
    assert re.search(r"^examples_per_second\s+\d", printed, re.MULTILINE), printed
