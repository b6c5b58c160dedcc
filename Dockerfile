# The one lakeloop image: every Airflow component, the MLflow server, the Spark master and workers, and the
# replay job. Built from requirements.lock exactly like the development venv (uv pip sync), so the Spark driver
# (inside an Airflow task) and the executors (on the workers) run identical Python, pyspark and TensorFlow.
FROM python:3.11-slim-bookworm

ARG UV_VERSION=0.13.9
ARG LAKELOOP_UID=50000

# Java 17 for Spark; curl for the health checks; tini reaps the JVMs and Python workers Spark forks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless curl procps tini \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s "$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")" /usr/lib/jvm/java-17

WORKDIR /opt/lakeloop
ENV JAVA_HOME=/usr/lib/jvm/java-17 \
    VIRTUAL_ENV=/opt/lakeloop/.venv \
    PATH=/opt/lakeloop/.venv/bin:$PATH \
    PYSPARK_PYTHON=/opt/lakeloop/.venv/bin/python \
    PYSPARK_DRIVER_PYTHON=/opt/lakeloop/.venv/bin/python \
    SPARK_HOME=/opt/lakeloop/.venv/lib/python3.11/site-packages/pyspark \
    AIRFLOW_HOME=/opt/airflow \
    PYTHONUNBUFFERED=1

# The same steps as `make setup` (a venv with pip, which scripts/fetch-movielens.sh uses in the replay service).
COPY requirements.lock ./
RUN python -m venv .venv \
    && .venv/bin/python -m pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}" \
    && .venv/bin/uv pip sync --no-cache --python .venv/bin/python requirements.lock

# Hadoop's s3a connector for s3:// lakes: hadoop-aws at the version of pyspark's Hadoop client and the AWS SDK it
# depends on, resolved by Spark's own Ivy at build time and put among Spark's jars, so every driver and executor
# has it (tests/test_docker_compose.py checks the version against the locked pyspark).
ARG HADOOP_AWS_VERSION=3.5.0
RUN .venv/bin/python -c "from pyspark.sql import SparkSession; SparkSession.builder.master('local[1]').config('spark.jars.packages', 'org.apache.hadoop:hadoop-aws:${HADOOP_AWS_VERSION}').config('spark.jars.ivy', '/tmp/ivy').getOrCreate().stop()" \
    && cp /tmp/ivy/jars/*.jar "${SPARK_HOME}/jars/" \
    && rm -rf /tmp/ivy

COPY . .
RUN .venv/bin/uv pip install --no-cache --python .venv/bin/python --no-deps . \
    && useradd --uid "${LAKELOOP_UID}" --gid 0 --create-home lakeloop \
    && mkdir -p /var/lib/lakeloop /var/lib/mlflow-auth /opt/airflow/logs \
    && chown -R lakeloop:0 /var/lib/lakeloop /var/lib/mlflow-auth /opt/airflow

USER lakeloop
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["lakeloop", "--help"]
