"""Kafka client configuration from Airflow connection extras or the environment, in kafka-python's spelling.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from lakeloop.config import (
    KAFKA_SECURITY_PROTOCOL_ENV,
    BadSetting,
    ConfigurationError,
    SettingsReader,
    load_settings,
    parse_kafka_security_protocol,
)

# Option names accepted from Airflow connection extras / the environment, and the confluent-kafka
# (librdkafka) spellings also accepted, so a connection made for the official Kafka provider works.
CLIENT_OPTIONS = frozenset({
    "bootstrap_servers", "client_id", "security_protocol", "sasl_mechanism", "sasl_plain_username",
    "sasl_plain_password", "sasl_kerberos_name", "sasl_kerberos_service_name", "sasl_kerberos_domain_name",
    "ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password", "ssl_crlfile", "ssl_check_hostname",
    "ssl_ciphers", "request_timeout_ms", "api_version", "max_partition_fetch_bytes", "fetch_max_bytes",
    "fetch_max_wait_ms", "receive_buffer_bytes", "send_buffer_bytes", "connections_max_idle_ms",
    "reconnect_backoff_ms", "reconnect_backoff_max_ms", "metadata_max_age_ms", "bootstrap_timeout_ms",
    "client_dns_lookup", "isolation_level",
})


CLIENT_OPTION_ALIASES = {
    "bootstrap.servers": "bootstrap_servers",
    "client.id": "client_id",
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.mechanisms": "sasl_mechanism",
    "sasl.username": "sasl_plain_username",
    "sasl.password": "sasl_plain_password",
    "sasl.kerberos.service.name": "sasl_kerberos_service_name",
    "ssl.ca.location": "ssl_cafile",
    "ssl.certificate.location": "ssl_certfile",
    "ssl.key.location": "ssl_keyfile",
    "ssl.key.password": "ssl_password",
    "ssl.crl.location": "ssl_crlfile",
}


ENV_CLIENT_OPTIONS = {
    KAFKA_SECURITY_PROTOCOL_ENV: "security_protocol",
    "LAKELOOP_KAFKA_SASL_MECHANISM": "sasl_mechanism",
    "LAKELOOP_KAFKA_SASL_USERNAME": "sasl_plain_username",
    "LAKELOOP_KAFKA_SASL_PASSWORD": "sasl_plain_password",
    "LAKELOOP_KAFKA_SSL_CAFILE": "ssl_cafile",
}


def normalize_client_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Translate client options (kafka-python or librdkafka spelling) to kafka-python keyword arguments.

    Unknown names raise ValueError listing the names only, never values (they may hold secrets). The security
    protocol is matched case-insensitively to Kafka's names and a misspelt one (`SASL-SSL`) raises
    ConfigurationError: kafka-python would connect in plaintext.
    """
    normalized: dict[str, Any] = {}
    unknown = []
    for name, value in options.items():
        key = CLIENT_OPTION_ALIASES.get(name, name)
        if key not in CLIENT_OPTIONS:
            unknown.append(name)
            continue
        if key == "security_protocol":
            try:
                value = parse_kafka_security_protocol(value)
            except ValueError as refused:
                raise ConfigurationError(BadSetting(name, value, str(refused))) from None
        normalized[key] = value
    if unknown:
        raise ValueError(f"unsupported Kafka client options {sorted(unknown)}; supported: {sorted(CLIENT_OPTIONS)} "
                         f"and the librdkafka names {sorted(CLIENT_OPTION_ALIASES)}")
    if isinstance(normalized.get("bootstrap_servers"), str):
        normalized["bootstrap_servers"] = [host.strip() for host in normalized["bootstrap_servers"].split(",")
                                           if host.strip()]
    return normalized


def security_options_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The Kafka security options of the environment, in kafka-python's spelling: `LAKELOOP_KAFKA_SECURITY_PROTOCOL`
    (Kafka's names, any case; another raises ConfigurationError), `..._SASL_MECHANISM`, `..._SASL_USERNAME`,
    `..._SASL_PASSWORD` and `..._SSL_CAFILE`, each when set and not empty."""
    env = os.environ if environ is None else environ
    options: dict[str, Any] = {key: env[name] for name, key in ENV_CLIENT_OPTIONS.items() if env.get(name)}
    if "security_protocol" in options:
        reader = SettingsReader(env)
        options["security_protocol"] = reader.read(KAFKA_SECURITY_PROTOCOL_ENV, parse_kafka_security_protocol, None)
        reader.check()
    return options


def client_config_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Kafka client options of the default set-up: `LAKELOOP_KAFKA_BOOTSTRAP` plus the optional security settings
    of `security_options_from_env`. The whole environment is checked first (`load_settings`)."""
    env = os.environ if environ is None else environ
    options: dict[str, Any] = {"bootstrap_servers": load_settings(env).kafka_bootstrap}
    options.update(security_options_from_env(env))
    return normalize_client_options(options)
