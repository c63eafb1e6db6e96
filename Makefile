# The two commands of the README: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Line coverage of src/banyanstore by the test suite was 91% when this floor was set.
COVERAGE_FLOOR := 88

.PHONY: demo test lint bench soak torture clean

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

# The torture harness (tests/torture/) run long, with a summary of figures: see docs/reliability.md.
torture: $(STAMP)
	nice -n 10 $(BIN)/python -m tests.torture --hours 2 --out torture-figures.json

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) demo-data bench-data torture-figures.json
