#!/usr/bin/env bash
# Create Airflow's metadata database and MLflow's backend store, each with its own owner role.
# The postgres image runs this once, on an empty data volume (/docker-entrypoint-initdb.d); the PostgreSQL
# test runs it against its throwaway cluster (PGHOST/PGPORT/PGPASSWORD set), so both get the same layout.
set -euo pipefail

create_database() {
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
       -v database="$1" -v owner="$2" -v password="$3" <<'SQL'
CREATE ROLE :"owner" LOGIN PASSWORD :'password';
CREATE DATABASE :"database" OWNER :"owner";
SQL
}

create_database "$AIRFLOW_DB_NAME" "$AIRFLOW_DB_USER" "$AIRFLOW_DB_PASSWORD"
create_database "$MLFLOW_DB_NAME" "$MLFLOW_DB_USER" "$MLFLOW_DB_PASSWORD"
