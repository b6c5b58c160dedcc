"""`LakeloopNotifier` delivers to a real HTTP server and a real SMTP server on 127.0.0.1.

These tests call the notifier with the context shapes Airflow hands to each hook; the DAG run that fails
for real under the scheduler is in tests/dags/test_daily_retrain_scheduler.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.message import Message
from types import SimpleNamespace

import pytest

from operators.notifiers import LakeloopNotifier, alert_from_context, summarise_exception
from tests.alert_servers import SMTPServer, WebhookServer, alert_servers, self_signed_certificate

LOGICAL_DATE = datetime(2026, 11, 20, tzinfo=UTC)


def body_of(message: Message) -> str:
    """The text of an email, whatever its MIME structure."""
    return "".join(part.get_payload(decode=True).decode() for part in message.walk() if not part.is_multipart())


def task_failure_context() -> dict:
    ti = SimpleNamespace(dag_id="daily_retrain", task_id="ingest_ratings", run_id="scheduled__2026-11-21",
                         try_number=3, log_url="http://127.0.0.1:8080/dags/daily_retrain/runs/r/tasks/ingest_ratings")
    return {"ti": ti, "logical_date": LOGICAL_DATE, "exception": ConnectionError("broker unreachable at 127.0.0.1:1")}


@pytest.fixture
def smtp_connection(monkeypatch):
    with alert_servers() as (webhook, smtp):
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", smtp.connection_uri_json("oncall@example.org"))
        monkeypatch.setenv("LAKELOOP_ALERT_WEBHOOK", webhook.url)
        yield webhook, smtp


def test_a_failed_task_is_posted_and_emailed(smtp_connection):
    webhook, smtp = smtp_connection
    LakeloopNotifier()(task_failure_context())

    [payload] = webhook.payloads
    assert payload["kind"] == "task_failed"
    assert {key: payload[key] for key in ("dag_id", "task_id", "run_id", "logical_date", "try_number")} == {
        "dag_id": "daily_retrain", "task_id": "ingest_ratings", "run_id": "scheduled__2026-11-21",
        "logical_date": "2026-11-20T00:00:00+00:00", "try_number": 3}
    assert payload["exception"] == "ConnectionError: broker unreachable at 127.0.0.1:1"
    assert payload["log_url"].endswith("/tasks/ingest_ratings")
    assert "daily_retrain.ingest_ratings failed after 3 tries" in payload["text"]
    [message] = smtp.messages
    assert message["To"] == "oncall@example.org"
    assert message["Subject"] == "[lakeloop] daily_retrain.ingest_ratings failed after 3 tries"
    assert "ConnectionError: broker unreachable at 127.0.0.1:1" in body_of(message)


def test_a_missed_deadline_uses_the_same_path(smtp_connection):
    webhook, smtp = smtp_connection
    context = {"dag_run": {"dag_id": "daily_retrain", "dag_run_id": "scheduled__2026-11-21",
                           "logical_date": "2026-11-20T00:00:00Z"},
               "deadline": {"id": "d1", "deadline_time": datetime(2026, 11, 21, 6, tzinfo=UTC)}}
    LakeloopNotifier(context=context)(context)

    [payload] = webhook.payloads
    assert payload["kind"] == "deadline_missed"
    assert payload["run_id"] == "scheduled__2026-11-21"
    assert "2026-11-21T06:00:00+00:00" in payload["exception"]
    assert len(smtp.messages) == 1


def test_a_run_failed_by_a_task_is_not_alerted_twice_but_a_timeout_is(smtp_connection):
    webhook, smtp = smtp_connection
    from airflow.sdk import DAG

    run_context = {"dag": DAG("daily_retrain", schedule=None), "run_id": "scheduled__2026-11-21"}
    LakeloopNotifier()({**run_context, "reason": "task_failure"})
    assert webhook.payloads == [] and smtp.messages == []

    LakeloopNotifier()({**run_context, "reason": "timed_out"})
    [payload] = webhook.payloads
    assert (payload["kind"], payload["run_id"], payload["exception"]) == (
        "dag_run_failed", "scheduled__2026-11-21", "reason: timed_out")


def test_a_serialized_dag_in_the_context_is_notified_too(smtp_connection):
    webhook, _ = smtp_connection
    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import DagSerialization

    serialized = DagSerialization.from_dict(DagSerialization.to_dict(DAG("daily_retrain", schedule=None)))
    LakeloopNotifier()({"dag": serialized, "run_id": "manual__2026-11-21", "reason": "timed_out"})
    assert [payload["kind"] for payload in webhook.payloads] == ["dag_run_failed"]


def test_delivery_failures_are_logged_never_raised(monkeypatch, capsys):
    with WebhookServer(status=500) as failing_webhook:
        monkeypatch.setenv("LAKELOOP_ALERT_WEBHOOK", failing_webhook.url)
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT",
                           '{"conn_type": "smtp", "host": "127.0.0.1", "port": 1, "extra": {"to": "x@example.org"}}')
        LakeloopNotifier(timeout=2)(task_failure_context())
    assert len(failing_webhook.payloads) == 1
    logged = capsys.readouterr().out
    assert "could not post the task_failed alert to the webhook: HTTP Error 500" in logged
    assert "could not email the task_failed alert" in logged


def test_without_configuration_nothing_is_sent(monkeypatch):
    monkeypatch.delenv("LAKELOOP_ALERT_WEBHOOK", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_SMTP_DEFAULT", raising=False)
    LakeloopNotifier()(task_failure_context())
    assert alert_from_context(task_failure_context()).kind == "task_failed"


def test_long_exceptions_are_cut():
    summary = summarise_exception(RuntimeError("x" * 2000))
    assert len(summary) == 500 and summary.startswith("RuntimeError: xxx") and summary.endswith("…")


@pytest.fixture(scope="module")
def untrusted_certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 that no CA of the system trusts."""
    return self_signed_certificate(tmp_path_factory.mktemp("smtp-tls"))


@pytest.mark.parametrize("implicit_tls", [False, True], ids=["starttls", "tls-from-the-start"])
def test_email_over_tls_is_refused_when_the_server_certificate_is_not_trusted(monkeypatch, capsys,
                                                                              untrusted_certificate, implicit_tls):
    monkeypatch.delenv("LAKELOOP_ALERT_WEBHOOK", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with SMTPServer(untrusted_certificate, implicit_tls=implicit_tls) as smtp:
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", smtp.connection_uri_json("oncall@example.org"))
        LakeloopNotifier()(task_failure_context())
    assert smtp.messages == []
    logged = capsys.readouterr().out
    assert "could not email the task_failed alert" in logged and "CERTIFICATE_VERIFY_FAILED" in logged


@pytest.mark.parametrize("implicit_tls", [False, True], ids=["starttls", "tls-from-the-start"])
def test_email_over_tls_is_sent_when_the_server_certificate_is_trusted(monkeypatch, untrusted_certificate,
                                                                       implicit_tls):
    monkeypatch.delenv("LAKELOOP_ALERT_WEBHOOK", raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(untrusted_certificate[0]))
    with SMTPServer(untrusted_certificate, implicit_tls=implicit_tls) as smtp:
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", smtp.connection_uri_json("oncall@example.org"))
        LakeloopNotifier()(task_failure_context())
    [message] = smtp.messages
    assert message["Subject"] == "[lakeloop] daily_retrain.ingest_ratings failed after 3 tries"


@pytest.mark.parametrize("old_extra", ["ssl", "starttls"])
def test_a_connection_with_the_old_tls_extras_is_told_how_to_migrate(monkeypatch, capsys, old_extra):
    monkeypatch.delenv("LAKELOOP_ALERT_WEBHOOK", raising=False)
    with SMTPServer() as smtp:
        connection = json.loads(smtp.connection_uri_json("oncall@example.org"))
        connection["extra"] = {"to": "oncall@example.org", old_extra: True}
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps(connection))
        LakeloopNotifier()(task_failure_context())
    assert smtp.messages == []
    logged = capsys.readouterr().out
    assert f"SMTP connection 'smtp_default' sets the extra `{old_extra}`, which lakeloop no longer reads" in logged
    assert '"disable_ssl": true' in logged and '"disable_tls": true' in logged


def test_a_connection_asking_for_starttls_inside_tls_is_told_which_extra_to_set(monkeypatch, capsys,
                                                                                 untrusted_certificate):
    monkeypatch.delenv("LAKELOOP_ALERT_WEBHOOK", raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(untrusted_certificate[0]))
    with SMTPServer(untrusted_certificate, implicit_tls=True) as smtp:
        connection = json.loads(smtp.connection_uri_json("oncall@example.org"))
        del connection["extra"]["disable_tls"], connection["extra"]["disable_ssl"]
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps(connection))
        LakeloopNotifier()(task_failure_context())
    assert smtp.messages == []
    logged = capsys.readouterr().out
    assert "STARTTLS extension not supported by server." in logged
    assert 'set {"disable_tls": true} for TLS from the first byte (port 465)' in logged


def test_a_plain_relay_reached_without_the_tls_extras_is_told_which_extras_to_set(monkeypatch, capsys):
    monkeypatch.delenv("LAKELOOP_ALERT_WEBHOOK", raising=False)
    with SMTPServer() as smtp:
        connection = json.loads(smtp.connection_uri_json("oncall@example.org"))
        del connection["extra"]["disable_tls"], connection["extra"]["disable_ssl"]
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps(connection))
        LakeloopNotifier()(task_failure_context())
    assert smtp.messages == []
    logged = capsys.readouterr().out
    assert f"the SMTP server 127.0.0.1:{smtp.port} did not answer TLS" in logged
    assert '{"disable_ssl": true, "disable_tls": true}' in logged
