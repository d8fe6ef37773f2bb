# The two set-up commands of the README: `make demo` and `make test`. Each makes .venv when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python 3.10 or newer is needed")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

AIRFLOW_ENV := AIRFLOW_HOME=$(CURDIR)/.airflow-demo AIRFLOW__CORE__LOAD_EXAMPLES=False

# Until the demo DAGs land: show that Airflow discovers the provider and its connection type.
demo: $(STAMP)
	$(AIRFLOW_ENV) $(BIN)/airflow providers get airflow-provider-salebot
	$(AIRFLOW_ENV) $(BIN)/airflow providers hooks | grep -i salebot

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy salebot_provider

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .airflow-demo .pytest_cache .mypy_cache .ruff_cache
