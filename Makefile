# The two commands of the README: `make demo` and `make test`.
PY ?= python3
# `make test` and the other developer targets: an editable install with the dev extra.
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make demo`: a venv of its own with a plain install -- only what running needs, the way
# a user installs the package (reinstalled when the sources change).
DEMO_VENV := .venv-demo
DEMO_STAMP := $(DEMO_VENV)/.installed
SOURCES := $(shell find src/banyanstore -name '*.py' -o -name '*.c' -o -name '*.h' -o -name '*.pyi')
# Line coverage of src/banyanstore by the test suite was 91% when this floor was set.
COVERAGE_FLOOR := 88

# The optional compiled core (src/banyanstore/_native.c), built in place next to the sources.
NATIVE := $(VENV)/.native-built
PYTEST := $(BIN)/python -m pytest -p no:cacheprovider
# The suite's runs spread over two worker processes (pytest-xdist; the machines of this
# project have two cores): `make test` takes about half the time.  Each worker steals from
# the other's queue, so one long test does not leave a worker idle.
PARALLEL := -n 2 --dist worksteal

.PHONY: demo test test-pure test-native test-asan lint bench soak torture check-dist clean

# setuptools >= 77 in the venv too: `setup.py build_ext` below reads pyproject's SPDX license.
$(STAMP): pyproject.toml setup.py
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip 'setuptools>=77'
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

$(DEMO_STAMP): pyproject.toml setup.py $(SOURCES)
	$(PY) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/pip install -q --upgrade pip
	$(DEMO_VENV)/bin/pip install -q .
	touch $(DEMO_STAMP)

# pip built the extension with the editable install; rebuild it when its sources change.
# The build is optional: without a C compiler the engine runs on pure Python.
NATIVE_SOURCES := src/banyanstore/_native.c $(wildcard src/banyanstore/native/*.c src/banyanstore/native/*.h)
$(NATIVE): $(NATIVE_SOURCES) $(STAMP)
	$(BIN)/python setup.py -q build_ext --inplace || echo "compiled core not built: pure Python only"
	touch $(NATIVE)

demo: $(DEMO_STAMP)
	$(DEMO_VENV)/bin/python -m banyanstore.demo demo-data

# The whole suite twice: on the pure-Python engine (with the coverage floor, since it
# measures the Python code) and on the compiled core; then the linters.
test: test-pure test-native
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

test-pure: $(NATIVE)
	BANYANSTORE_PURE_PYTHON=1 $(PYTEST) $(PARALLEL) --cov=banyanstore --cov-report=term:skip-covered \
		--cov-fail-under=$(COVERAGE_FLOOR)

test-native: $(NATIVE)
	@if $(BIN)/python -c "import banyanstore._native" 2>/dev/null; then \
		BANYANSTORE_PURE_PYTHON= $(PYTEST) $(PARALLEL); \
	elif [ -n "$$BANYANSTORE_TEST_REQUIRE_NATIVE" ]; then \
		echo "BANYANSTORE_TEST_REQUIRE_NATIVE is set but the compiled core did not build"; exit 1; \
	else \
		echo "compiled core not built: the native run is skipped"; \
	fi

# The compiled core under AddressSanitizer: a copy of src/ with the extension built with
# -fsanitize=address, Python's allocator off (so every bytes object is its own malloc
# block and an overread is caught), libasan preloaded; the table, store and fuzz tests.
# A malloc too large to serve returns NULL, as it does without the sanitizer: a damaged
# zstd block may claim petabytes, which the reader reports as CorruptionError after the
# MemoryError (ASan's default is to abort the process there).
ASAN_DIR := build/asan
ASAN_TESTS := tests/sstable tests/log/test_native_framing.py tests/lsm/test_memtable_native.py tests/lsm/test_put_path.py tests/lsm/test_merge_native.py tests/lsm/test_store_api.py tests/lsm/test_seek.py tests/lsm/test_model.py tests/lsm/test_scan_differential.py tests/fuzz
test-asan: $(NATIVE)
	rm -rf $(ASAN_DIR) && mkdir -p $(ASAN_DIR)
	cp -r src $(ASAN_DIR)/src
	rm -f $(ASAN_DIR)/src/banyanstore/_native*.so
	CFLAGS="-fsanitize=address -fno-omit-frame-pointer -g -O1" $(BIN)/python setup.py -q build_ext \
		--build-temp $(ASAN_DIR)/tmp --build-lib $(ASAN_DIR)/src
	LD_PRELOAD=$$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 \
		PYTHONMALLOC=malloc \
		PYTHONPATH=$(ASAN_DIR)/src BANYANSTORE_PURE_PYTHON= BANYANSTORE_TEST_REQUIRE_NATIVE=1 \
		$(PYTEST) $(PARALLEL) $(ASAN_TESTS)

lint: $(NATIVE)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

soak: $(NATIVE)
	BANYANSTORE_SOAK=1 $(BIN)/python -m pytest -p no:cacheprovider -m soak

# The torture harness (tests/torture/) run long, with a summary of figures: see docs/reliability.md.
torture: $(NATIVE)
	nice -n 10 $(BIN)/python -m tests.torture --hours 2 --out torture-figures.json

bench: $(NATIVE)
	$(BIN)/python benchmarks/run_all.py

# `python -m build` makes an sdist and a wheel; each must install in a fresh venv and run
# the demo (.ci/check-dist; CI runs it after `make test`).
check-dist:
	PY=$(PY) .ci/check-dist

clean:
	rm -rf $(VENV) $(DEMO_VENV) demo-data bench-data torture-figures.json
	rm -f src/banyanstore/_native*.so
