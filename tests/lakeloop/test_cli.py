"""The `lakeloop` command's arguments and exit codes, with a real embedded broker where a command starts one and
real Delta tables for `lakeloop lake`."""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as csv
import pyarrow.parquet as pq
import pytest

from lakeloop.cli import MAX_DAYS, broker_whatever_the_settings, main
from lakeloop.delta import replace_partition
from lakeloop.delta_maintenance import maintain_table
from lakeloop.lake import Lake
from lakeloop.names import PREDICTIONS, RAW_RATINGS, USER_EMBEDDINGS
from lakeloop.services import free_port, port_open

END_DATE = date(2026, 11, 20)


@pytest.fixture
def project_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state directory and lake of this test alone, a broker port nobody uses; any broker a command started
    there is stopped afterwards."""
    monkeypatch.setenv("LAKELOOP_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("LAKELOOP_LAKE_URL", (tmp_path / "lake").as_uri())
    monkeypatch.setenv("LAKELOOP_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")
    yield tmp_path
    broker_whatever_the_settings().stop()


@pytest.mark.parametrize("command", ["replay", "run", "summary"])
@pytest.mark.parametrize("days", ["0", "-3", "1000000", "three"])
def test_a_day_count_outside_1_to_the_maximum_is_refused_before_any_work(project_state, capsys, command, days):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--days", days, "--end-date", END_DATE.isoformat()])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert f"error: argument --days: expected a whole number of days from 1 to {MAX_DAYS}, got {days!r}" in error
    assert not (project_state / "broker").exists(), "nothing was started"


def test_a_window_reaching_before_year_1_is_refused(project_state, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["summary", "--days", "10", "--end-date", "0001-01-05"])
    assert exit_.value.code == 2
    assert "error: --days 10 ending 0001-01-05 would start before 0001-01-01" in capsys.readouterr().err


def test_run_stops_the_broker_it_started_when_it_fails(project_state):
    bootstrap_port = int(broker_whatever_the_settings().port)
    with pytest.raises(FileNotFoundError, match="no MovieLens 100K"):
        main(["run", "--days", "1", "--end-date", END_DATE.isoformat(),
              "--dataset-dir", str(project_state / "no-such-dataset")])
    broker = broker_whatever_the_settings()
    assert broker.pid() is None and not broker.pid_file.exists()
    assert not port_open("127.0.0.1", bootstrap_port)


def test_run_leaves_a_broker_it_did_not_start_running(project_state):
    assert main(["services", "up"]) == 0
    broker = broker_whatever_the_settings()
    pid = broker.pid()
    with pytest.raises(FileNotFoundError):
        main(["run", "--days", "1", "--dataset-dir", str(project_state / "no-such-dataset")])
    assert broker.pid() == pid and port_open(broker.host, broker.port)


def test_summary_of_an_empty_lake_says_so_and_fails(project_state, capsys):
    for extra in ([], ["--json"]):
        assert main(["summary", "--days", "2", "--end-date", END_DATE.isoformat(), *extra]) == 1
        captured = capsys.readouterr()
        assert captured.out == ""
        assert (f"lakeloop summary: the lake {(project_state / 'lake').as_uri()} holds nothing for 2026-11-19 to "
                f"2026-11-20") in captured.err


def test_summary_of_a_lake_with_a_day_in_the_window_succeeds(project_state, capsys):
    lake = Lake.from_url((project_state / "lake").as_uri())
    replace_partition(lake, RAW_RATINGS, END_DATE, pa.table({"x": [1]}),
                      {"counts": {"read": 3, "written": 3, "rejected": 0}})

    assert main(["summary", "--days", "2", "--end-date", END_DATE.isoformat()]) == 0
    out = capsys.readouterr().out
    assert "\n2026-11-20  ingested 3 (read 3, rejected 0)\n" in out and "\n2026-11-19  ingested -" in out


def test_run_keeps_the_terminal_for_progress_and_logs_its_own_messages_to_the_run_directory(project_state, capsys):
    root_handlers = list(logging.getLogger().handlers)
    with pytest.raises(FileNotFoundError):
        main(["run", "--days", "1", "--end-date", END_DATE.isoformat(),
              "--dataset-dir", str(project_state / "no-such-dataset")])
    out = capsys.readouterr().out
    [log_dir] = (project_state / "logs").iterdir()
    assert out == (f"lakeloop run: daily_retrain for 1 day(s), 2026-11-20 to 2026-11-20; every task's log in "
                   f"{log_dir}\n")
    assert (log_dir / "lakeloop.log").exists()
    assert logging.getLogger().handlers == root_handlers


def write_predictions_days(project_state: Path) -> Lake:
    """The predictions table with 2026-11-20 written twice (7 rows, then 2) and 2026-11-19 once: versions 0 to 2."""
    lake = Lake.from_url((project_state / "lake").as_uri())
    for day, users in ((END_DATE, range(1, 8)), (date(2026, 11, 19), range(3)), (END_DATE, range(20, 22))):
        replace_partition(lake, PREDICTIONS, day, pa.table({"user_id": pa.array(users, pa.int64()),
                                                            "item_id": [f"m{user}" for user in users]}), {})
    return lake


def test_lake_history_lists_every_commit_newest_first(project_state, capsys):
    write_predictions_days(project_state)
    maintain_table(Lake.from_url((project_state / "lake").as_uri()), PREDICTIONS, retention_hours=0,
                   force_short_retention=True)

    assert main(["lake", "history", PREDICTIONS]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["version", "timestamp", "(UTC)", "operation", "predicate"]
    assert [line.split()[0] for line in lines[1:]] == ["4", "3", "2", "1", "0"]
    assert [line.split()[3:] for line in lines[1:]] == [
        ["VACUUM", "END", "-"], ["VACUUM", "START", "-"], ["WRITE", "dt", "=", "'2026-11-20'"],
        ["WRITE", "dt", "=", "'2026-11-19'"], ["WRITE", "dt", "=", "'2026-11-20'"]]

    assert main(["lake", "history", "embeddings/users"]) == 1
    assert "has no Delta table embeddings/users yet" in capsys.readouterr().err


def test_lake_read_prints_a_past_versions_rows_or_writes_them_to_a_file(project_state, capsys, tmp_path):
    write_predictions_days(project_state)

    assert main(["lake", "read", PREDICTIONS, "--day", "2026-11-20", "--version", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "7 rows of predictions dt=2026-11-20 (version 0); the first 5:"
    assert out[1].split() == ["user_id", "item_id"] and [line.split() for line in out[2:]] == [
        [str(user), f"m{user}"] for user in range(1, 6)]
    assert main(["lake", "read", PREDICTIONS, "--day", "2026-11-20"]) == 0
    assert capsys.readouterr().out.startswith("2 rows of predictions dt=2026-11-20 (newest version); the first 2:")

    for name in ("old.parquet", "old.csv"):
        assert main(["lake", "read", PREDICTIONS, "--day", "2026-11-20", "--version", "1",
                     "--output", str(tmp_path / name)]) == 0
        assert capsys.readouterr().out == (f"7 rows of predictions dt=2026-11-20 (version 1) written to "
                                           f"{tmp_path / name}\n")
    assert pq.read_table(tmp_path / "old.parquet")["user_id"].to_pylist() == list(range(1, 8))
    assert csv.read_csv(tmp_path / "old.csv")["user_id"].to_pylist() == list(range(1, 8))


def test_lake_read_says_what_it_cannot_read_and_why(project_state, capsys, tmp_path):
    lake = write_predictions_days(project_state)
    replace_partition(lake, USER_EMBEDDINGS, END_DATE, pa.table({
        "user_id": ["1"], "bias": [0.5], "factors": pa.array([[0.1, 0.2]], pa.list_(pa.float64(), 2))}), {})
    maintain_table(lake, PREDICTIONS, retention_hours=0, force_short_retention=True)

    assert main(["lake", "read", PREDICTIONS, "--day", "2026-11-20", "--version", "0"]) == 1
    assert ("predictions version 0 can no longer be read for 2026-11-20: VACUUM (version 3, "
            in capsys.readouterr().err)
    assert main(["lake", "read", PREDICTIONS, "--day", "2026-11-18"]) == 1
    assert "predictions in the lake" in capsys.readouterr().err
    assert main(["lake", "read", PREDICTIONS, "--day", "2026-11-20", "--version", "9"]) == 1
    assert "predictions has no version 9 to read: its newest is 4" in capsys.readouterr().err
    assert main(["lake", "read", USER_EMBEDDINGS, "--day", "2026-11-20", "--output", str(tmp_path / "u.csv")]) == 1
    assert "has list columns (factors) that a CSV file cannot hold" in capsys.readouterr().err
    assert not (tmp_path / "u.csv").exists()


@pytest.mark.parametrize(("arguments", "error"), [
    (["--version", "-1"], "argument --version: expected a table version, a whole number >= 0, got '-1'"),
    (["--output", "rows.json"], "argument --output: expected a file ending in .parquet or .csv, got 'rows.json'"),
])
def test_lake_read_refuses_a_bad_version_or_output_before_reading(project_state, capsys, arguments, error):
    with pytest.raises(SystemExit) as exit_:
        main(["lake", "read", PREDICTIONS, "--day", "2026-11-20", *arguments])
    assert exit_.value.code == 2
    assert error in capsys.readouterr().err
