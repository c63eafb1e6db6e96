# The two commands of the README: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Line coverage of src/banyanstore by the test suite was 91% when this floor was set.
COVERAGE_FLOOR := 88

.PHONY: demo test lint bench soak clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m banyanstore.demo demo-data

test: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider --cov=banyanstore --cov-report=term:skip-covered \
		--cov-fail-under=$(COVERAGE_FLOOR)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

soak: $(STAMP)
	BANYANSTORE_SOAK=1 $(BIN)/python -m pytest -p no:cacheprovider -m soak

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) demo-data bench-data
