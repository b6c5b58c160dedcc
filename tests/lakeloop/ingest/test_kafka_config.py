"""Kafka client options from connection extras and the environment."""

from __future__ import annotations

import pytest

from lakeloop.ingest.kafka_config import client_config_from_env, normalize_client_options


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
