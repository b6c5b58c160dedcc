"""`LakeloopNotifier`: tell people about a failed task, a failed run or a missed deadline (webhook, email).

See docs/operations.md (alerting).
"""

from __future__ import annotations

import html
import json
import os
import smtplib
import ssl
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from airflow.sdk.bases.notifier import BaseNotifier

WEBHOOK_ENV = "LAKELOOP_ALERT_WEBHOOK"
SMTP_CONN_ENV = "LAKELOOP_ALERT_SMTP_CONN_ID"
DEFAULT_SMTP_CONN_ID = "smtp_default"
EXCEPTION_SUMMARY_CHARS = 500
ALREADY_ALERTED_REASONS = frozenset({"task_failure"})
# The TLS extras of lakeloop's own SMTP code, replaced by the Airflow SMTP provider's `disable_ssl`/`disable_tls`.
RETIRED_SMTP_EXTRAS = ("ssl", "starttls")


@dataclass(frozen=True)
class Alert:
    """One alert: what failed, where, and where to look."""

    kind: str
    dag_id: str | None
    task_id: str | None
    run_id: str | None
    logical_date: str | None
    try_number: int | None
    exception: str | None
    log_url: str | None

    @property
    def headline(self) -> str:
        """What happened, in a few words (the email subject)."""
        what = f"{self.dag_id}.{self.task_id}" if self.task_id else f"{self.dag_id} run {self.run_id}"
        return {"task_failed": f"{what} failed after {self.try_number} tries",
                "dag_run_failed": f"{what} failed",
                "deadline_missed": f"{what} has not finished by its deadline"}.get(self.kind, f"{what}: {self.kind}")

    @property
    def text(self) -> str:
        """The one-line, Slack-compatible message."""
        parts = [f":red_circle: {self.headline}", f"(logical date {self.logical_date})"]
        if self.exception:
            parts.append(f"— {self.exception}")
        if self.log_url:
            parts.append(f"<{self.log_url}|log>")
        return " ".join(parts)

    def payload(self) -> dict[str, Any]:
        """The JSON body posted to the webhook."""
        return {"text": self.text, **asdict(self)}


def summarise_exception(error: BaseException | str | None) -> str | None:
    """`Type: message`, cut to a length a chat message can carry."""
    if error is None:
        return None
    summary = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
    return summary if len(summary) <= EXCEPTION_SUMMARY_CHARS else summary[: EXCEPTION_SUMMARY_CHARS - 1] + "…"


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, datetime) else str(value)


def alert_from_context(context: Mapping[str, Any]) -> Alert | None:
    """The alert for a callback context, or None when the failure was already alerted on.

    Tells the three callers apart by their contexts: a deadline callback gets `deadline` and a `dag_run`
    dictionary; a DAG callback gets `reason`; a task callback gets neither.
    """
    if "deadline" in context:
        run = context.get("dag_run") or {}
        return Alert(kind="deadline_missed", dag_id=run.get("dag_id"), task_id=None, run_id=run.get("dag_run_id"),
                     logical_date=_iso(run.get("logical_date")), try_number=None,
                     exception=f"deadline was {_iso(context['deadline'].get('deadline_time'))}", log_url=None)
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    logical_date = _iso(context.get("logical_date") or getattr(dag_run, "logical_date", None))
    if "reason" in context:
        if context["reason"] in ALREADY_ALERTED_REASONS:
            return None
        dag = context.get("dag")
        return Alert(kind="dag_run_failed", dag_id=getattr(dag, "dag_id", None) or getattr(ti, "dag_id", None),
                     task_id=None, run_id=context.get("run_id") or getattr(ti, "run_id", None),
                     logical_date=logical_date, try_number=None, exception=f"reason: {context['reason']}",
                     log_url=None)
    return Alert(kind="task_failed", dag_id=getattr(ti, "dag_id", None), task_id=getattr(ti, "task_id", None),
                 run_id=getattr(ti, "run_id", None), logical_date=logical_date,
                 try_number=getattr(ti, "try_number", None), exception=summarise_exception(context.get("exception")),
                 log_url=getattr(ti, "log_url", None))


class LakeloopNotifier(BaseNotifier):
    """Send a failure or deadline alert to the webhook and, if an SMTP connection exists, by email.

    :param webhook_url: Where to POST the JSON alert; None reads `LAKELOOP_ALERT_WEBHOOK` when notifying
        (unset: no webhook).
    :param smtp_conn_id: The Airflow SMTP connection; None reads `LAKELOOP_ALERT_SMTP_CONN_ID`, else
        `smtp_default` (absent: no email). The SMTP provider's `SmtpHook` sends through it, with its TLS and
        certificate checks; the connection's `timeout` extra bounds the email.
    :param timeout: Seconds allowed for the webhook POST.
    """

    def __init__(self, webhook_url: str | None = None, smtp_conn_id: str | None = None, timeout: float = 10.0,
                 context: Mapping[str, Any] | None = None) -> None:
        super().__init__(context=context)
        self.webhook_url = webhook_url
        self.smtp_conn_id = smtp_conn_id
        self.timeout = timeout

    def get_template_env(self, dag: Any = None) -> Any:
        """The DAG's Jinja environment, or a plain one when the DAG is a serialized one without it (what
        `airflow dags test` hands a DAG-level failure callback in Airflow 3.3)."""
        return super().get_template_env(dag=dag if hasattr(dag, "get_template_env") else None)

    def notify(self, context: Mapping[str, Any]) -> None:
        """Deliver the context's alert through every configured channel; log delivery failures."""
        alert = alert_from_context(context)
        if alert is None:
            self.log.info("run failed because a task failed: that task's alert already went out")
            return
        webhook_url = self.webhook_url or os.environ.get(WEBHOOK_ENV)
        if webhook_url:
            try:
                self.post_webhook(webhook_url, alert)
            except Exception as error:  # alerting never fails the task it reports on
                self.log.error("could not post the %s alert to the webhook: %s", alert.kind, error)
        try:
            self.send_email(alert)
        except Exception as error:
            self.log.error("could not email the %s alert: %s", alert.kind, error)

    def post_webhook(self, url: str, alert: Alert) -> None:
        """POST the alert as JSON."""
        request = urllib.request.Request(url, data=json.dumps(alert.payload()).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            response.read()
        self.log.info("posted the %s alert to the webhook", alert.kind)

    def send_email(self, alert: Alert) -> None:
        """Email the alert through the SMTP connection, if that connection exists, with the Airflow SMTP provider's
        hook (TLS as the connection's `disable_ssl`/`disable_tls` extras say, server certificates verified)."""
        from airflow.providers.smtp.hooks.smtp import SmtpHook
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        conn_id = self.smtp_conn_id or os.environ.get(SMTP_CONN_ENV, DEFAULT_SMTP_CONN_ID)
        try:
            connection = BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:
            self.log.debug("no SMTP connection %r: not emailing", conn_id)
            return
        extra = connection.extra_dejson
        for retired in RETIRED_SMTP_EXTRAS:
            if retired in extra:
                raise ValueError(
                    f"SMTP connection {conn_id!r} sets the extra `{retired}`, which lakeloop no longer reads: the "
                    "Airflow SMTP provider sends the email, TLS on unless told otherwise. For STARTTLS (port 587) "
                    'set {"disable_ssl": true}, for TLS from the start (port 465) {"disable_tls": true}, for a '
                    'plain relay both; then remove `ssl`/`starttls`')
        recipients = [address.strip() for address in str(extra.get("to", "")).split(",") if address.strip()]
        if not recipients:
            self.log.warning("SMTP connection %r has no `to` in its extra: not emailing", conn_id)
            return
        body = alert.text + "\n\n" + json.dumps(asdict(alert), indent=2)
        try:
            with SmtpHook(smtp_conn_id=conn_id) as smtp:
                smtp.send_email_smtp(to=recipients, subject=f"[lakeloop] {alert.headline}",
                                     html_content=f"<pre>{html.escape(body)}</pre>",
                                     from_email=extra.get("from_email") or connection.login or "lakeloop@localhost")
        except ssl.SSLCertVerificationError:
            raise
        except ssl.SSLError as error:
            raise RuntimeError(
                f"{error}: the SMTP server {connection.host}:{connection.port} did not answer TLS, which the "
                f"connection {conn_id!r} asks for (no `disable_ssl` extra). On a STARTTLS port (587) set "
                '{"disable_ssl": true}; for a plain relay inside a trusted network {"disable_ssl": true, '
                '"disable_tls": true}') from error
        except smtplib.SMTPNotSupportedError as error:
            raise RuntimeError(
                f"{error} The SMTP connection {conn_id!r} asks for STARTTLS (no `disable_tls` extra) and this server "
                'does not offer it: set {"disable_tls": true} for TLS from the first byte (port 465), or '
                '{"disable_ssl": true} on a STARTTLS port (587)') from error
        self.log.info("emailed the %s alert to %s", alert.kind, ", ".join(recipients))
