"""Real local servers that receive alerts in tests: an HTTP webhook and an SMTP server, both on 127.0.0.1."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from lakeloop.services import free_port


class WebhookServer:
    """Records the JSON bodies POSTed to it; answers 200 (or `status`)."""

    def __init__(self, status: int = 200) -> None:
        self.payloads: list[dict] = []
        received = self.payloads

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key, no CA trusts it: (certificate PEM, key PEM) files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lakeloop test SMTP server")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    certificate_file, key_file = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    certificate_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return certificate_file, key_file


class SMTPServer:
    """An aiosmtpd server keeping every message it receives: plain SMTP, or with a certificate (see
    `self_signed_certificate`) STARTTLS (required before any mail) or TLS from the first byte (`implicit_tls`)."""

    def __init__(self, certificate: tuple[Path, Path] | None = None, implicit_tls: bool = False) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[Message] = []
        received = self.messages

        class Handler:
            async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd's naming)
                received.append(message_from_bytes(envelope.content))
                return "250 OK"

        self.port = free_port()
        self.tls = "ssl" if certificate and implicit_tls else "starttls" if certificate else None
        tls: dict = {}
        if certificate:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*certificate)
            tls = {"ssl_context": context} if implicit_tls else {"tls_context": context, "require_starttls": True}
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **tls)

    def connection_uri_json(self, to: str) -> str:
        """An `AIRFLOW_CONN_...` value for this server, in the Airflow SMTP provider's terms: `disable_ssl` unless
        it speaks TLS from the first byte, `disable_tls` (no STARTTLS) unless it requires STARTTLS."""
        return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": self.port,
                           "extra": {"to": to, "from_email": "lakeloop@example.org", "disable_ssl": self.tls != "ssl",
                                     "disable_tls": self.tls != "starttls", "retry_limit": 0}})

    def __enter__(self) -> SMTPServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


@contextmanager
def alert_servers() -> Iterator[tuple[WebhookServer, SMTPServer]]:
    """A webhook server and an SMTP server, stopped on exit."""
    with WebhookServer() as webhook, SMTPServer() as smtp:
        yield webhook, smtp
