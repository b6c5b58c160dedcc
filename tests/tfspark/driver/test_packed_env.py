"""`tfspark-submit --python-env`, actually run: a venv packed with venv-pack, unpacked by Spark for its executors.

The packed venv is small and honest about what it holds: its own `packed_env_marker` module, and a `.pth` file
that adds this test venv's site-packages (TensorFlow, pyarrow, pyspark, tfspark) with `site.addsitedir`, instead
of copying gigabytes of packages into the archive. Its `bin/python` links to the same base interpreter as this
venv's (venv-pack keeps that link), so it runs on this machine only; a real archive holds the packages themselves.

The job runs on a `local-cluster` master: a standalone Master and Worker inside the driver's JVM whose executors
are separate processes, so Spark ships the archive, unpacks it as `environment/` in the executor's working
directory and starts the Python workers with `./environment/bin/python` (`spark.pyspark.python`), as a standalone
or YARN cluster does.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
from tfspark_jobs import spark_home_in

MARKER_VALUE = "imported from the packed environment"


def pack_environment(directory: Path) -> Path:
    """Create a venv under `directory` holding `packed_env_marker` and a `.pth` to this venv's packages, and
    pack it with venv-pack into `directory/environment.tar.gz`; return the archive's path."""
    env_dir = directory / "packed-venv"
    venv.create(env_dir, with_pip=False)
    site_packages = env_dir / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    (site_packages / "packed_env_marker.py").write_text(f"WHERE = {MARKER_VALUE!r}\n")
    host_packages = sysconfig.get_path("purelib")
    (site_packages / "host_packages.pth").write_text(f"import site; site.addsitedir({host_packages!r})\n")
    archive = directory / "environment.tar.gz"
    venv_pack = Path(sys.executable).parent / "venv-pack"
    subprocess.run([str(venv_pack), "--prefix", str(env_dir), "--output", str(archive)], check=True)
    return archive


@pytest.mark.slow
def test_the_barrier_task_runs_on_the_packed_environments_python(tfspark_submit, tmp_path):
    archive = pack_environment(tmp_path)
    result = tfspark_submit(
        [
            "--trainer", "packed_env_trainer:PackedEnvTrainer", "--num-workers", "1",
            "--master", "local-cluster[1,1,1024]",
            "--python-env", str(archive),
            "--trainer-arg", "epochs=1", "--trainer-arg", "limit=200",
        ]
    )  # fmt: skip
    assert result.returncode == 0, result.log_tail()
    summary = result.summary
    assert summary["packed_env_marker"] == MARKER_VALUE, (
        f"the barrier task could not import the packed environment's module: it ran on {summary['python_executable']}"
    )
    executor_dirs = spark_home_in(tmp_path / "spark-work") / "work"
    unpacked = Path(summary["python_prefix"])
    assert unpacked.name == "environment" and unpacked.is_relative_to(executor_dirs), (
        f"sys.prefix {unpacked} is not the archive unpacked in an executor's directory under {executor_dirs}"
    )
    assert summary["python_executable"] == str(unpacked / "bin" / "python"), "./environment/bin/python, made absolute"
    assert summary["rows"] == 200 and summary["global_step"] == 4, "1 epoch of ceil(200 / 64) steps"
