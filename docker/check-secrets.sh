#!/bin/sh
# Refuse to start the compose stack while a secret is empty or still a `change-me…` placeholder of
# .env.example (compose's `${VAR:?}` only refuses unset or empty values, and the placeholders would otherwise
# sign Airflow's API tokens, encrypt its connections and guard MinIO, MLflow and Kafka).
#
#   check-secrets.sh NAME[:MIN_LENGTH]...     each NAME an environment variable, named as in .env
#
# Prints one line per bad variable (naming it, never printing its value) and exits 1; exits 0 when every
# variable is set, is no placeholder and is at least MIN_LENGTH characters long. docker-compose.yaml runs it
# as the one-shot `check-secrets` service that every other service waits for
# (`condition: service_completed_successfully`); tests/test_docker_compose.py runs it for real.
set -u

status=0
for spec in "$@"; do
  name=${spec%%:*}
  min=0
  case $spec in *:*) min=${spec#*:} ;; esac
  case $name in
    '' | [0-9]* | *[!A-Za-z0-9_]*) echo "check-secrets: '$name' is not a variable name" >&2; exit 2 ;;
  esac
  case $min in
    '' | *[!0-9]*) echo "check-secrets: '$min' (for $name) is not a length" >&2; exit 2 ;;
  esac
  eval "value=\${$name-}"
  if [ -z "$value" ]; then
    echo "$name is empty: set it in .env" >&2
    status=1
  elif [ "${value#change-me}" != "$value" ]; then
    echo "$name is still the change-me placeholder of .env.example: replace it in .env" >&2
    status=1
  elif [ "${#value}" -lt "$min" ]; then
    echo "$name is shorter than $min characters: replace it in .env" >&2
    status=1
  fi
done

if [ "$status" -ne 0 ]; then
  echo "Refusing to start: fix the secrets above in .env (see .env.example for how to generate each)." >&2
else
  echo "check-secrets: $# secrets set, none of them a placeholder."
fi
exit "$status"
