"""Kafka client options from connection extras and the environment."""

from __future__ import annotations

import re

import pytest

from lakeloop.config import ConfigurationError
from lakeloop.ingest.kafka_config import client_config_from_env, normalize_client_options, security_options_from_env


def test_client_options_accept_librdkafka_names_and_hide_values_of_unknown_ones():
    assert normalize_client_options({"bootstrap.servers": "a:1, b:2", "security.protocol": "SASL_SSL",
                                     "sasl.username": "u", "sasl.password": "p"}) == {
        "bootstrap_servers": ["a:1", "b:2"], "security_protocol": "SASL_SSL", "sasl_plain_username": "u",
        "sasl_plain_password": "p"}
    with pytest.raises(ValueError, match=r"\['sasl\.jaas\.config'\]") as raised:
        normalize_client_options({"sasl.jaas.config": "secret-value"})
    assert "secret-value" not in str(raised.value)
    env = {"LAKELOOP_KAFKA_BOOTSTRAP": "k1:9092,k2:9092", "LAKELOOP_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
           "LAKELOOP_KAFKA_SASL_MECHANISM": "PLAIN", "LAKELOOP_KAFKA_SASL_USERNAME": "u",
           "LAKELOOP_KAFKA_SASL_PASSWORD": "p"}
    assert client_config_from_env(env) == {
        "bootstrap_servers": ["k1:9092", "k2:9092"], "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "u", "sasl_plain_password": "p"}


@pytest.mark.parametrize(("value", "protocol"), [("sasl_ssl", "SASL_SSL"), ("Ssl", "SSL"),
                                                 ("sasl_plaintext", "SASL_PLAINTEXT"), ("PLAINTEXT", "PLAINTEXT")])
def test_security_protocols_are_matched_in_any_case(value, protocol):
    env = {"LAKELOOP_KAFKA_BOOTSTRAP": "k1:9092", "LAKELOOP_KAFKA_SECURITY_PROTOCOL": value}
    assert client_config_from_env(env)["security_protocol"] == protocol
    assert normalize_client_options({"security.protocol": value}) == {"security_protocol": protocol}


@pytest.mark.parametrize("value", ["SASL-SSL", "sasl-ssl", "TLS"])
def test_a_misspelt_security_protocol_in_the_environment_is_refused_not_taken_for_plaintext(value):
    env = {"LAKELOOP_KAFKA_BOOTSTRAP": "k1:9092", "LAKELOOP_KAFKA_SECURITY_PROTOCOL": value}
    with pytest.raises(ConfigurationError, match="^" + re.escape(f"LAKELOOP_KAFKA_SECURITY_PROTOCOL={value!r}: ")):
        client_config_from_env(env)
    with pytest.raises(ConfigurationError, match="^LAKELOOP_KAFKA_SECURITY_PROTOCOL="):
        security_options_from_env(env)


@pytest.mark.parametrize("value", ["SASL-SSL", "sasl-ssl", "TLS", "", None])
def test_a_misspelt_security_protocol_in_connection_extras_is_refused(value):
    for name in ("security.protocol", "security_protocol"):  # either spelling of an Airflow connection's extras
        with pytest.raises(ConfigurationError, match="^" + re.escape(f"{name}={value!r}: one of PLAINTEXT, ")):
            normalize_client_options({name: value})


def test_empty_security_variables_are_unset():
    env = {"LAKELOOP_KAFKA_BOOTSTRAP": "k1:9092", "LAKELOOP_KAFKA_SECURITY_PROTOCOL": "",
           "LAKELOOP_KAFKA_SASL_MECHANISM": ""}
    assert client_config_from_env(env) == {"bootstrap_servers": ["k1:9092"]}
    assert security_options_from_env(env) == {}


@pytest.mark.parametrize("value", ["not-a-host:xx", "", "k1"])
def test_a_bad_bootstrap_is_refused_naming_the_variable(value):
    with pytest.raises(ConfigurationError, match="^" + re.escape(f"LAKELOOP_KAFKA_BOOTSTRAP={value!r}: ")):
        client_config_from_env({"LAKELOOP_KAFKA_BOOTSTRAP": value})
