# The two set-up commands of the README: `make demo` and `make test`. Each makes .venv when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python 3.10 or newer is needed")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

AIRFLOW_ENV := AIRFLOW_HOME=$(CURDIR)/.airflow-demo AIRFLOW__CORE__LOAD_EXAMPLES=False

# Until the demo DAGs land: Airflow discovers the provider, then a tour of the hook on the emulator.
demo: $(STAMP)
	$(AIRFLOW_ENV) $(BIN)/airflow providers hooks 2>/dev/null | grep -i -e connection_type -e salebot
	$(AIRFLOW_ENV) $(BIN)/python -m salebot_provider.testing.tour

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy salebot_provider

test: lint
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/emulator.py
	$(BIN)/python bench/triggers.py

clean:
	rm -rf $(VENV) .airflow-demo .pytest_cache .mypy_cache .ruff_cache
