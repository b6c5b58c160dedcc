#!/usr/bin/env bash
# Start the apache/kafka image's broker with SASL/PLAIN on its EXTERNAL listener, the only listener published
# on the host: write the broker's JAAS file with the one user EXTERNAL_SASL_USERNAME/EXTERNAL_SASL_PASSWORD
# (KAFKA_EXTERNAL_USERNAME/KAFKA_EXTERNAL_PASSWORD of .env), point KAFKA_OPTS at it, then exec the image's own
# entrypoint. The PLAINTEXT and CONTROLLER listeners serve the compose network only.
#
# The JAAS file rather than KAFKA_LISTENER_NAME_EXTERNAL_PLAIN_SASL_JAAS_CONFIG: the image turns every KAFKA_*
# variable into a broker property and silently drops a value containing '=', which a JAAS line always does.
# For the same reason the credentials come in variables not named KAFKA_* (they would become properties).
# SASL_JAAS_FILE and BROKER_ENTRYPOINT exist for tests/test_docker_compose.py, which runs this script.
set -euo pipefail

jaas_file=${SASL_JAAS_FILE:-/opt/kafka/config/lakeloop_server_jaas.conf}
entrypoint=${BROKER_ENTRYPOINT:-/etc/kafka/docker/run}
user=${EXTERNAL_SASL_USERNAME:-}
password=${EXTERNAL_SASL_PASSWORD:-}

if [[ ! $user =~ ^[A-Za-z0-9_-]+$ ]]; then
  echo "kafka: KAFKA_EXTERNAL_USERNAME must be letters, digits, '_' or '-' (got '$user'): set it in .env" >&2
  exit 1
fi
if [[ -z $password || $password == change-me* || $password == *$'\n'* ]]; then
  echo "kafka: KAFKA_EXTERNAL_PASSWORD is empty, the change-me placeholder or multi-line: set it in .env" >&2
  exit 1
fi

# A JAAS value is a double-quoted string: escape its backslashes and quotes.
escaped=${password//\\/\\\\}
escaped=${escaped//\"/\\\"}
(
  umask 077
  cat > "$jaas_file" <<EOF
external.KafkaServer {
  org.apache.kafka.common.security.plain.PlainLoginModule required
  user_${user}="${escaped}";
};
EOF
)
unset EXTERNAL_SASL_PASSWORD
export KAFKA_OPTS="${KAFKA_OPTS:+$KAFKA_OPTS }-Djava.security.auth.login.config=$jaas_file"
exec "$entrypoint" "$@"
