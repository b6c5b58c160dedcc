# The one lakeloop image: every Airflow component, the MLflow server, the Spark master and workers, and the
# replay job. Built from requirements.lock exactly like the development venv (uv pip sync), so the Spark driver
# (inside an Airflow task) and the executors (on the workers) run identical Python, pyspark and TensorFlow.

# The jars Spark adds to pyspark's own (jvm/spark/pom.xml: hadoop-aws for s3:// lakes and the AWS SDK bundle), resolved
# from Maven Central by the same file `make setup` resolves, in a stage of their own: Maven stays out of the image.
FROM maven:3.9-eclipse-temurin-17 AS jvm
WORKDIR /build
COPY jvm/ jvm/
RUN mvn --batch-mode --quiet --no-transfer-progress -f jvm/pom.xml --projects spark --also-make package

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

# Among Spark's own jars, so every driver and executor has them (tests/test_docker_compose.py checks the pom's
# Hadoop version against the locked pyspark's).
COPY --from=jvm /build/jvm/lib/spark/ ${SPARK_HOME}/jars/

COPY . .
RUN .venv/bin/uv pip install --no-cache --python .venv/bin/python --no-deps . \
    && useradd --uid "${LAKELOOP_UID}" --gid 0 --create-home lakeloop \
    && mkdir -p /var/lib/lakeloop /var/lib/mlflow-auth /opt/airflow/logs \
    && chown -R lakeloop:0 /var/lib/lakeloop /var/lib/mlflow-auth /opt/airflow

USER lakeloop
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["lakeloop", "--help"]
