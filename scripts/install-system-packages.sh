#!/usr/bin/env bash
# Install the Debian packages lakeloop's tests need beyond the Python venv, only when missing.
#   kcat: an independent Kafka client, used to prove the ingestion accepts a producer nobody here wrote.
#   chromium, chromium-driver: headless browser for the Airflow UI test (Playwright's browser download does
#     not work on our build machines; Debian's Chromium does).
#   docker-compose: validates docker-compose.yaml (`docker-compose config`) without a Docker engine.
#   postgresql: the production metadata database, started by the PostgreSQL test on 127.0.0.1.
# Idempotent: does nothing (and needs no root) when everything is already installed.
set -euo pipefail

missing=()
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)

if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
else
    echo "install-system-packages: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
fi

echo "install-system-packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
