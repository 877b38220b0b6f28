# Two set-up commands for a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-kafka kafka lint bench install dashboards schemas clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@command -v prometheus >/dev/null || { echo "installing Debian's prometheus (the demo shows its alerts)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
		 && (systemctl stop prometheus 2>/dev/null || service prometheus stop 2>/dev/null || true) >/dev/null 2>&1) \
		|| echo "could not install prometheus: the demo runs without it"; }
	$(BIN)/socialpulse demo

test: $(STAMP)
	@command -v promtool >/dev/null && command -v amtool >/dev/null && command -v stunnel4 >/dev/null || { echo "installing Debian's prometheus, alertmanager and stunnel4"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager stunnel4 openssl >/dev/null) \
		|| echo "could not install them: the tests that need them fail"; }
	$(BIN)/python -m tests.kafka install
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile

# Apache Kafka (tests/kafka.py: the pinned 4.x from Maven Central, checksums verified) into .cache/kafka
kafka: $(STAMP)
	$(BIN)/python -m tests.kafka install

# the integration tests on Apache Kafka alone (each kafka-marked test's [kafka] variant, and the
# cluster, security and hot-account tests that only run there)
test-kafka: kafka
	$(BIN)/python -m pytest -q -p no:cacheprovider -k "kafka and not tansu" tests/integration

lint: $(STAMP)
	$(BIN)/ruff check streams schemas tests bench deploy
	$(BIN)/mypy streams schemas

bench: $(STAMP)
	$(BIN)/python bench/run.py

dashboards: $(STAMP)
	$(BIN)/python -m deploy.grafana.dashboards deploy/grafana/dashboards

schemas: $(STAMP)
	$(BIN)/socialpulse schemas export schemas/json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .cache
