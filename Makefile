# Two set-up commands for a fresh machine (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.cost_pipeline

.PHONY: install demo test ui lint format bench eval clean

$(BIN)/dagster: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/dagster

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

## Generate the demo company and materialize every asset for every demo day.
demo: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/cost-pipeline demo

## The test suite (warehouse and instance tests on SQLite and PostgreSQL).
test: install
	$(BIN)/pytest -q

## Dagster UI and daemon on the same instance the demo wrote to.
ui: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

lint: install
	$(BIN)/ruff check cost_pipeline cost_pipeline_tests
	$(BIN)/ruff format --check cost_pipeline cost_pipeline_tests

format: install
	$(BIN)/ruff format cost_pipeline cost_pipeline_tests
	$(BIN)/ruff check --fix cost_pipeline cost_pipeline_tests

## Benchmarks: print figures, never part of the test suite.
bench: install
	$(BIN)/python -m cost_pipeline_tests.benchmarks.bench_pricing
	$(BIN)/python -m cost_pipeline_tests.benchmarks.bench_pipeline

## Detector and forecast evaluation on held-out seeds.
eval: install
	$(BIN)/python -m cost_pipeline_tests.benchmarks.evaluate

clean:
	rm -rf .cost_pipeline
