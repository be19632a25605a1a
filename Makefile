# Two set-up commands for a fresh machine (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.cost_pipeline
PORT ?= 3000

.PHONY: install demo test ui lint format bench eval eval-real clean focus-validator

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

# The FinOps `focus-validator` needs Python >= 3.12: its own venv, used by
# cost_pipeline_tests/lib/test_focus_validator.py. Built once (a file target), reused after.
# pyarrow < 22 because focus-validator pins numpy < 2 and newer pyarrow needs numpy 2.
FOCUS_PYTHON ?= python3.12
FOCUS_VENV := .venv-focus
$(FOCUS_VENV)/bin/focus-validator:
	PYENV_VERSION=$${PYENV_VERSION:-$$(pyenv versions --bare 2>/dev/null | grep -m1 '^3\.12')} \
		$(FOCUS_PYTHON) -m venv $(FOCUS_VENV)
	$(FOCUS_VENV)/bin/pip install --quiet focus-validator==2.2.1 'pyarrow<22'
	@touch $@

focus-validator: $(FOCUS_VENV)/bin/focus-validator

## The test suite (warehouse and instance tests on SQLite and PostgreSQL).
test: install $(FOCUS_VENV)/bin/focus-validator
	$(BIN)/pytest -q -n 4

## Dagster UI and daemon on the same instance the demo wrote to.
ui: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(PORT)

lint: install
	$(BIN)/ruff check cost_pipeline cost_pipeline_tests
	$(BIN)/ruff format --check cost_pipeline cost_pipeline_tests

format: install
	$(BIN)/ruff format cost_pipeline cost_pipeline_tests
	$(BIN)/ruff check --fix cost_pipeline cost_pipeline_tests

## Benchmarks: print figures, never part of the test suite.
bench: install
	$(BIN)/python -m cost_pipeline_tests.benchmarks.bench_pricing
	$(BIN)/python -m cost_pipeline_tests.benchmarks.bench_pipeline --events 1000000,10000000
	$(BIN)/python -m cost_pipeline_tests.benchmarks.bench_analytics
	$(BIN)/python -m cost_pipeline_tests.benchmarks.bench_enforcement
	$(BIN)/python -m cost_pipeline_tests.benchmarks.bench_estimate

## Detector and forecast evaluation on held-out seeds.
eval: install
	$(BIN)/python -m cost_pipeline_tests.benchmarks.evaluate
	$(BIN)/python -m cost_pipeline_tests.benchmarks.evaluate_families

## The same on real daily series of your own (CSV files or folders; labels: NAB-style windows):
## make eval-real SERIES="path ..." [LABELS=windows.json]
eval-real: install
	$(BIN)/python -m cost_pipeline_tests.benchmarks.evaluate_real --series $(SERIES) \
		$(if $(LABELS),--labels $(LABELS))

clean:
	rm -rf .cost_pipeline
