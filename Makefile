# Two commands do everything on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: venv java build demo stop test lint clean scale soak bench

venv: $(STAMP)

# Re-installs only when the pinned requirements change; pip takes torch from wheels on disk.
$(STAMP): requirements.txt requirements-dev.txt requirements-clients.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "error: Python 3.11 is required, got " + sys.version.split()[0])'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps $$(grep '^kserve==' requirements-clients.txt)
	$(PY) -m pip install -q --disable-pip-version-check $$(grep -v -e '^#' -e '^kserve==' requirements-clients.txt)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

java:
	@scripts/ensure_java.sh

model_store/classifier.mar: $(STAMP) $(wildcard mar_builder/*.py handler/*)
	./build_mar.sh

build: model_store/classifier.mar

demo: venv java build
	scripts/demo.sh

stop:
	$(VENV)/bin/torchserve --stop

# The running server (make demo) keeps WORKERS workers: the management API, waiting until they are READY.
scale: venv
	@test -n "$(WORKERS)" || { echo "usage: make scale WORKERS=N" >&2; exit 2; }
	$(PY) -m mar_builder.operate scale $(WORKERS)

# A bounded soak on a server of its own: mixed good and bad traffic; errors, latency, worker RSS.
SOAK_SECONDS ?= 180
soak: venv java build
	$(PY) -m mar_builder.soak --seconds $(SOAK_SECONDS)

# The stock image_classifier handler that the benchmark compares against needs captum.
$(BENCH_STAMP): $(STAMP) requirements-bench.txt
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-bench.txt
	touch $@

# In-process limit, our server at 1/4/8 clients, the stock handler, 12 MP photos: about 8 minutes.
# BENCH_ARGS passes options on, e.g. BENCH_ARGS="--seconds 10 --clients 4".
bench: venv java $(BENCH_STAMP)
	$(PY) -m benchmarks.bench $(BENCH_ARGS)

test: venv java lint
	$(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check mar_builder handler tests benchmarks

clean:
	rm -rf model_store/*.mar logs key_file.json
