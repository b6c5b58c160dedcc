"""Settings are checked once, when loaded: a bad value raises one error naming the variable and the value, and
`lakeloop services down`/`status` work whatever the settings say."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys

import pytest

from lakeloop.cli import main
from lakeloop.config import PROJECT_DIR, BadSetting, ConfigurationError, load_settings


def refusal(name: str, value: str) -> str:
    """The start of the message refusing `name=value`, as a regular expression."""
    return "^" + re.escape(f"{name}={value!r}: ")


def test_the_defaults_pass_the_checks():
    settings = load_settings({})
    assert settings.lake_url == (settings.state_dir / "lake").as_uri()
    assert settings.kafka_bootstrap == "127.0.0.1:19092"
    assert settings.model_name == "lakeloop-fm"
    assert settings.gate_tolerance == 0.01


@pytest.mark.parametrize("value", ["abc", "-1", "-0.01", "nan", "inf", "-inf", ""])
def test_a_gate_tolerance_that_is_not_a_finite_number_at_least_zero_is_refused(value):
    with pytest.raises(ConfigurationError, match=refusal("LAKELOOP_GATE_TOLERANCE", value)):
        load_settings({"LAKELOOP_GATE_TOLERANCE": value})


@pytest.mark.parametrize(("value", "tolerance"), [("0", 0.0), ("0.05", 0.05), ("1e-3", 0.001)])
def test_a_finite_gate_tolerance_at_least_zero_is_taken(value, tolerance):
    assert load_settings({"LAKELOOP_GATE_TOLERANCE": value}).gate_tolerance == tolerance


@pytest.mark.parametrize("value", ["abc", "-0.1", "1.5", "nan"])
def test_a_rating_drift_threshold_outside_zero_to_one_is_refused(value):
    with pytest.raises(ConfigurationError, match=refusal("LAKELOOP_MAX_RATING_DRIFT", value)):
        load_settings({"LAKELOOP_MAX_RATING_DRIFT": value})


@pytest.mark.parametrize(("name", "value"), [
    ("LAKELOOP_GPUS_PER_WORKER", "two"), ("LAKELOOP_GPUS_PER_WORKER", "-1"), ("LAKELOOP_GPUS_PER_WORKER", "0.5"),
    ("LAKELOOP_GPU_POOL_SLOTS", "0"), ("LAKELOOP_CHECKPOINT_SECONDS", "0"), ("LAKELOOP_CHECKPOINT_SECONDS", "inf"),
])
def test_training_resources_out_of_range_are_refused(name, value):
    with pytest.raises(ConfigurationError, match=refusal(name, value)):
        load_settings({name: value})


def test_the_training_settings_reach_the_dags_training_task(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    defaults = load_settings({})
    assert (defaults.gpus_per_worker, defaults.gpu_pool_slots, defaults.checkpoint_seconds) == (0, 1, 300.0)
    monkeypatch.setenv("LAKELOOP_GPUS_PER_WORKER", "2")
    monkeypatch.setenv("LAKELOOP_CHECKPOINT_SECONDS", "90")
    train_model = DagBag(dag_folder=str(PROJECT_DIR / "dags")).dags["daily_retrain"].get_task("train_model")
    assert (train_model.gpus_per_worker, train_model.checkpoint_seconds, train_model.pool) == (2, 90.0, "gpu_pool")
    options = train_model.submit_options()
    assert (options.gpus_per_worker, options.checkpoint_seconds) == (2, 90.0)


def test_the_rating_drift_threshold_setting_is_the_dags_default_run_param(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    assert load_settings({}).max_rating_drift == 0.2
    monkeypatch.setenv("LAKELOOP_MAX_RATING_DRIFT", "0.4")
    bag = DagBag(dag_folder=str(PROJECT_DIR / "dags"))
    assert bag.dags["daily_retrain"].params["max_rating_drift"] == 0.4


@pytest.mark.parametrize("value", [
    "relative/path",  # would land in each process's working directory
    "file://relative/x",  # means /x
    "file:relative/x",
    "ftp://host/lake",
    "s3://",
    "s3:///no-bucket",
    "s3a://bucket/lake",  # pyarrow does not open s3a://; lakeloop derives it for Spark from s3://
    "S3://bucket/lake",
    "",
])
def test_a_lake_url_that_is_not_absolute_or_of_an_unknown_scheme_is_refused(value):
    with pytest.raises(ConfigurationError, match=refusal("LAKELOOP_LAKE_URL", value)):
        load_settings({"LAKELOOP_LAKE_URL": value})


@pytest.mark.parametrize("value", ["/srv/lake", "file:///srv/lake", "file://localhost/srv/lake",
                                   "s3://bucket/prefix", "s3://bucket", "gs://bucket/lake", "hdfs://namenode:8020/lake"])
def test_absolute_lake_urls_of_known_schemes_are_taken_as_given(value):
    assert load_settings({"LAKELOOP_LAKE_URL": value}).lake_url == value


@pytest.mark.parametrize("value", ["not-a-host:xx", "", " , ", "broker", "broker:", ":9092", "broker:0",
                                   "broker:65536", "k1:9092,k2", "k1:9092;k2:9092"])
def test_a_bootstrap_that_is_not_a_list_of_host_port_is_refused(value):
    with pytest.raises(ConfigurationError, match=refusal("LAKELOOP_KAFKA_BOOTSTRAP", value)):
        load_settings({"LAKELOOP_KAFKA_BOOTSTRAP": value})


@pytest.mark.parametrize(("value", "bootstrap"), [("k1:9092, k2:9093", "k1:9092,k2:9093"),
                                                  ("kafka:9092,", "kafka:9092"), ("[::1]:19092", "[::1]:19092")])
def test_host_port_bootstraps_are_taken_without_blanks(value, bootstrap):
    assert load_settings({"LAKELOOP_KAFKA_BOOTSTRAP": value}).kafka_bootstrap == bootstrap


@pytest.mark.parametrize("value", ["../../x", "..", ".hidden", "a..b", "models/x", "/abs", "fm v1", "fm'x", ""])
def test_a_model_name_that_could_leave_its_directory_is_refused(value):
    with pytest.raises(ConfigurationError, match=refusal("LAKELOOP_MODEL_NAME", value)):
        load_settings({"LAKELOOP_MODEL_NAME": value})


@pytest.mark.parametrize("value", ["lakeloop-fm", "fm_v1.2", "FM2"])
def test_model_names_of_letters_digits_dash_underscore_and_dot_are_taken(value):
    assert load_settings({"LAKELOOP_MODEL_NAME": value}).model_name == value


@pytest.mark.parametrize("value", ["SASL-SSL", "sasl-ssl", "TLS", "SASL_SSL ", "plain"])
def test_a_misspelt_kafka_security_protocol_is_refused_up_front(value):
    with pytest.raises(ConfigurationError, match=refusal("LAKELOOP_KAFKA_SECURITY_PROTOCOL", value)) as raised:
        load_settings({"LAKELOOP_KAFKA_SECURITY_PROTOCOL": value})
    assert "PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL" in str(raised.value)


@pytest.mark.parametrize("value", ["sasl_ssl", "SASL_SSL", "Ssl", "plaintext", ""])
def test_kafka_security_protocols_in_any_case_or_unset_pass(value):
    load_settings({"LAKELOOP_KAFKA_SECURITY_PROTOCOL": value})


def test_one_error_names_every_bad_variable_with_its_value():
    with pytest.raises(ConfigurationError) as raised:
        load_settings({"LAKELOOP_GATE_TOLERANCE": "nan", "LAKELOOP_LAKE_URL": "relative/lake",
                       "LAKELOOP_MODEL_NAME": "../x"})
    assert {problem.name for problem in raised.value.problems} == {
        "LAKELOOP_GATE_TOLERANCE", "LAKELOOP_LAKE_URL", "LAKELOOP_MODEL_NAME"}
    for named in ("LAKELOOP_GATE_TOLERANCE='nan': ", "LAKELOOP_LAKE_URL='relative/lake': ",
                  "LAKELOOP_MODEL_NAME='../x': "):
        assert named in str(raised.value)


def test_the_configuration_error_is_a_value_error_that_survives_pickling():
    error = ConfigurationError(BadSetting("LAKELOOP_TASK_RETRIES", "-2", "a whole number >= 0"))
    assert isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) == "LAKELOOP_TASK_RETRIES='-2': a whole number >= 0"
    assert copy.problems == error.problems


def test_commands_print_the_configuration_error_and_exit_2_without_a_traceback(monkeypatch, capsys):
    monkeypatch.setenv("LAKELOOP_GATE_TOLERANCE", "abc")
    monkeypatch.setenv("LAKELOOP_TASK_RETRIES", "-2")
    assert main(["summary", "--days", "1"]) == 2
    assert main(["airflow", "version"]) == 2
    assert main(["services", "up"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 3
    assert all("LAKELOOP_GATE_TOLERANCE='abc': " in line and "LAKELOOP_TASK_RETRIES='-2': " in line for line in lines)


@pytest.mark.parametrize("action", ["down", "status"])
def test_services_down_and_status_work_whatever_the_settings(tmp_path, action):
    env = {**os.environ, "LAKELOOP_STATE_DIR": str(tmp_path / "state"), "LAKELOOP_GATE_TOLERANCE": "abc",
           "LAKELOOP_KAFKA_BOOTSTRAP": "not-a-host:xx", "LAKELOOP_LAKE_URL": "relative/lake",
           "LAKELOOP_TASK_RETRIES": "-2"}
    done = subprocess.run([sys.executable, "-m", "lakeloop.cli", "services", action], cwd=PROJECT_DIR, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "kafka broker: stopped"  # no pid file here: nothing of anyone else's is stopped
    assert not (tmp_path / "state").exists()
