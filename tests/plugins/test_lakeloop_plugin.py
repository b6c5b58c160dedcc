"""The plugin registers the timetable, and Airflow's own CLI paths process the day the date names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROBE_DAG = '''
import json
from datetime import datetime, timezone
from pathlib import Path
from airflow.sdk import DAG, task
from lakeloop.timetable import DailyIntervalTimetable

with DAG(dag_id="interval_probe", schedule=DailyIntervalTimetable(),
         start_date=datetime(2026, 11, 1, tzinfo=timezone.utc), catchup=True,
         default_args={"owner": "lakeloop", "retries": 0}) as dag:
    @task
    def record(data_interval_start=None, data_interval_end=None, run_id=None):
        out = Path(__file__).with_name("intervals.jsonl")
        with out.open("a") as handle:
            handle.write(json.dumps({"start": data_interval_start.isoformat(), "end": data_interval_end.isoformat(),
                                     "run_id": run_id}) + "\\n")
    record()
'''


@pytest.fixture(scope="module")
def probe_env(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-home")
    dags = tmp_path_factory.mktemp("dags")
    (dags / "interval_probe.py").write_text(PROBE_DAG)
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"})
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
    return env, dags


def run_airflow(env, *args: str) -> None:
    airflow = str(Path(sys.executable).parent / "airflow")
    result = subprocess.run([airflow, *args], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def recorded(dags: Path) -> list[dict]:
    lines = (dags / "intervals.jsonl").read_text().splitlines()
    (dags / "intervals.jsonl").unlink()
    return [json.loads(line) for line in lines]


def test_plugin_registers_the_timetable():
    from airflow import plugins_manager

    assert "lakeloop.timetable.DailyIntervalTimetable" in plugins_manager.get_timetables_plugins()


def test_plugin_registers_the_extra_links():
    from airflow import plugins_manager

    assert {link.name for link in plugins_manager.get_operator_extra_links()} >= {
        "MLflow model version", "MLflow run", "MLflow model", "Spark UI"}


@pytest.mark.slow
def test_dags_test_and_tasks_test_process_the_named_day(probe_env):
    env, dags = probe_env
    run_airflow(env, "dags", "reserialize")
    run_airflow(env, "dags", "test", "interval_probe", "2026-11-20")
    run_airflow(env, "tasks", "test", "interval_probe", "record", "2026-11-19")
    intervals = recorded(dags)
    assert [(i["start"], i["end"]) for i in intervals] == [
        ("2026-11-20T00:00:00+00:00", "2026-11-21T00:00:00+00:00"),
        ("2026-11-19T00:00:00+00:00", "2026-11-20T00:00:00+00:00"),
    ]


@pytest.mark.slow
def test_a_backfill_creates_one_run_per_named_day(probe_env):
    env, _ = probe_env
    run_airflow(env, "dags", "reserialize")
    run_airflow(env, "dags", "unpause", "interval_probe")
    run_airflow(env, "backfill", "create", "--dag-id", "interval_probe", "--from-date", "2026-11-17",
                "--to-date", "2026-11-18", "--max-active-runs", "1")
    query = (
        "import json\n"
        "from airflow.models import DagRun\n"
        "from airflow.utils.session import create_session\n"
        "with create_session() as session:\n"
        "    runs = session.query(DagRun).filter(DagRun.dag_id == 'interval_probe', DagRun.run_type == 'backfill')\n"
        "    print(json.dumps(sorted([r.logical_date.isoformat(), r.data_interval_start.isoformat(),\n"
        "                             r.data_interval_end.isoformat()] for r in runs)))\n"
    )
    result = subprocess.run([sys.executable, "-c", query], env=env, capture_output=True, text=True, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [
        ["2026-11-17T00:00:00+00:00", "2026-11-17T00:00:00+00:00", "2026-11-18T00:00:00+00:00"],
        ["2026-11-18T00:00:00+00:00", "2026-11-18T00:00:00+00:00", "2026-11-19T00:00:00+00:00"],
    ]
