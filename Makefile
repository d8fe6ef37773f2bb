# The two set-up commands of the README: `make demo` and `make test`. Each makes .venv when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench e2e clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python 3.10 or newer is needed")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# A private Airflow home under the project (sqlite, no example DAGs of Airflow's own), the example DAGs.
DEMO_ENV := AIRFLOW_HOME=$(CURDIR)/.airflow-demo AIRFLOW__CORE__LOAD_EXAMPLES=False \
	AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/example_dags SALEBOT_EXAMPLE_DATA=$(CURDIR)/.airflow-demo/data

# The three example DAGs run as real Airflow tasks against the bundled emulator, then a report.
demo: $(STAMP)
	$(DEMO_ENV) $(BIN)/python -m salebot_provider.testing.demo --dags example_dags

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy salebot_provider

test: lint
	$(BIN)/pytest

BENCH_STAMP := $(VENV)/.bench-stamp

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# Measurements side by side, printed as tables with ratios (docs/performance.md); not part of `make test`.
bench: $(BENCH_STAMP)
	$(BIN)/python bench/hook_overhead.py
	$(BIN)/python bench/imports.py
	$(BIN)/python bench/operators.py
	$(BIN)/python bench/triggers.py
	$(BIN)/python bench/scaling.py
	$(BIN)/python bench/emulator.py
	$(BIN)/python bench/webhook.py

# A real deployment (Postgres, Redis, the emulator, Airflow's five processes and a Celery worker) running
# the example DAGs, checked end to end; not part of `make test` (docs/testing.md, docs/deployment.md).
e2e: $(STAMP)
	$(BIN)/python e2e/run.py

clean:
	rm -rf $(VENV) .airflow-demo .pytest_cache .mypy_cache .ruff_cache
