# lakeloop: `make run` runs the daily loop on embedded defaults; `make test` runs the test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lakeloop-installed
JVM_JARS := jvm/lib/.resolved
UV_VERSION := 0.13.9

.PHONY: setup run test lint lock services-up services-down clean bench bench-e2e bench-training bench-warm-start ui

setup: $(STAMP) var/data/ml-100k/ml-100k.inter $(JVM_JARS)

# Every task process imports TensorFlow, Airflow and MLflow: without cached bytecode each import compiles them from
# source (47 s instead of 15 s). Python caches what a process imports in the venv unless PYTHONDONTWRITEBYTECODE
# says not to (set on some machines and CI images), so the targets below run without it: the modules the loop
# imports are compiled once, on first use (~30 s), instead of all of the venv at set-up (uv --compile-bytecode:
# 2 min 50 s here).
unexport PYTHONDONTWRITEBYTECODE

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	bash scripts/install-system-packages.sh
	touch $(STAMP)

# The JVM parts (jvm/pom.xml: one module, one folder of jars under jvm/lib/ per classpath) come from Maven Central,
# once: the stamp depends on the poms, so a second `make setup` does nothing. The folders are emptied first so that a
# version bump leaves no old jar on a classpath. The first resolution (the dependency plugin and the Kafka broker's
# 45 jars, 43 MB, into an empty ~/.m2) took 47 s here; again with ~/.m2 filled, 16 s (Maven start-up). The spark
# module's (hadoop-aws for s3:// lakes with the AWS SDK bundle: 4 jars, 690 MB, nearly all the bundle) took 2 min
# 40 s more into that ~/.m2 (its poms 2 min 20 s, the jars 23 s). The delta module's (delta-spark and delta-storage:
# 2 jars, 9.6 MB) were in ~/.m2 already: the whole rule then ran in 4 s.
$(JVM_JARS): jvm/pom.xml jvm/kafka/pom.xml jvm/spark/pom.xml jvm/delta/pom.xml
	@command -v mvn >/dev/null && command -v java >/dev/null || { echo "make setup: resolving the JVM jars (the Kafka broker's, Spark's s3a connector, delta-spark) needs Maven 3.8+ (mvn) and Java 17+ (java); install them (Debian: apt-get install maven openjdk-17-jre-headless) and run make setup again" >&2; exit 1; }
	rm -rf jvm/lib/kafka jvm/lib/spark jvm/lib/delta
	mvn --batch-mode --quiet --no-transfer-progress -Dstyle.color=never -f jvm/pom.xml package
	touch $@

var/data/ml-100k/ml-100k.inter: | $(STAMP)
	bash scripts/fetch-movielens.sh var/data/ml-100k

run: setup
	$(BIN)/lakeloop services up
	$(BIN)/lakeloop run $(RUN_ARGS)

# Airflow UI on http://127.0.0.1:8080 (user admin, password in var/airflow/simple_auth_manager_passwords.json.generated)
# and MLflow UI on http://127.0.0.1:5000, with the embedded broker; Ctrl-C stops both UIs.
ui: setup
	$(BIN)/lakeloop services up
	$(BIN)/lakeloop ui

# Two pytest workers, each test module on one of them (module fixtures such as the scheduler test's Airflow
# deployment are shared within a module): most of the suite waits on process start-up and polling, not CPU.
TEST_WORKERS ?= 2
test: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -n $(TEST_WORKERS) --dist loadscope --durations=25 $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .

lock:
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

services-up: setup
	$(BIN)/lakeloop services up

services-down:
	$(BIN)/lakeloop services down

bench: setup
	$(BIN)/python -m bench.ingest_throughput

# One daily DAG run per day size (100K, 1M, 10M events by default; E2E_SIZES=100000,1000000 for fewer), each
# task timed; table and ratios printed, results in var/bench-e2e/, plot in bench/results/e2e_scaling.png.
E2E_SIZES ?= 100000,1000000,10000000
bench-e2e: setup
	$(BIN)/python -m bench.e2e --sizes $(E2E_SIZES)

# The training limit side by side: the FM in one process (L), the tfspark job with one worker (J1), as the DAG runs
# it (J2) and with the recipe before issue 19 (J0), on one synthetic day of EVENTS events (its feature partition
# cached in var/bench-training/); table, batch-size table and a last JSON line.
EVENTS ?= 1000000
bench-training: setup
	$(BIN)/python -m bench.training --events $(EVENTS)

# Warm start against cold start over MovieLens 100K replayed onto 6 days: a cold model per seed and a warm chain per
# warm_factor_scale each day, RMSE, NDCG@10 and training seconds; a table and a last JSON line.
bench-warm-start: setup
	$(BIN)/python -m bench.warm_start_days

clean:
	-$(BIN)/lakeloop services down
	rm -rf var
