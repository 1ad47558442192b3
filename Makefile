# Two commands do everything on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: venv java build demo serve predict stop test lint clean scale soak bench validate

venv: $(STAMP)

# Re-installs only when the pinned requirements change; pip takes torch from wheels on disk.
$(STAMP): requirements.txt requirements-dev.txt requirements-clients.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "error: Python 3.11 is required, got " + sys.version.split()[0])'
	@echo "Installing the pinned stack into $(VENV): torch, torchvision, TorchServe, the default model (about 2-3 minutes the first time)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps $$(grep '^kserve==' requirements-clients.txt)
	$(PY) -m pip install -q --disable-pip-version-check $$(grep -v -e '^#' -e '^kserve==' requirements-clients.txt)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

java:
	@scripts/ensure_java.sh

model_store/classifier.mar: $(STAMP) $(wildcard mar_builder/*.py mar_builder/model/*.py mar_builder/archive/*.py handler/*)
	./build_mar.sh

build: model_store/classifier.mar

# The server targets act on this checkout's own TorchServe (`mar-builder serve`; its files in .torchserve/).
# PORTS=BASE (BASE to BASE+4) or PORTS=auto and CONFIG=FILE choose where it listens; NAME= names archives.
SERVE_FLAGS = $(if $(PORTS),--ports $(PORTS)) $(if $(CONFIG),--config $(CONFIG))
# NAME only from the command line: some shells export NAME (WSL: the host name).
GIVEN_NAME = $(if $(filter command line,$(origin NAME)),$(NAME))
MODEL_FLAG = $(if $(GIVEN_NAME),--model $(GIVEN_NAME))

demo: venv java build
	scripts/demo.sh $(SERVE_FLAGS)

serve: venv java
	$(PY) -m mar_builder serve $(or $(GIVEN_NAME),classifier) $(SERVE_FLAGS)

predict: venv
	@test -n "$(IMG)" || { echo 'usage: make predict IMG="photo.jpg [more.png]" [NAME=model]' >&2; exit 2; }
	$(PY) -m mar_builder predict $(IMG) $(MODEL_FLAG)

stop:
	@if test -x $(PY); then $(PY) -m mar_builder stop; else echo "no $(VENV): no server of this checkout can be running"; fi

# The running server keeps WORKERS workers of model NAME: the management API, waiting until they are READY.
scale: venv
	@test -n "$(WORKERS)" || { echo "usage: make scale WORKERS=N [NAME=model]" >&2; exit 2; }
	$(PY) -m mar_builder scale $(WORKERS) $(MODEL_FLAG)

# A bounded soak on a server of its own: mixed good and bad traffic; errors, latency, worker RSS.
SOAK_SECONDS ?= 180
soak: venv java build
	$(PY) -m mar_builder.server.soak --seconds $(SOAK_SECONDS)

# An archive of model_store/ on labelled photos: eager vs .pt vs served (see README, Validate); exits 1
# below the agreement threshold. VALIDATE_ARGS passes options on, e.g. VALIDATE_ARGS="--labels-csv labels.csv".
validate: venv java $(if $(filter-out classifier,$(GIVEN_NAME)),,build)
	@test -n "$(DATA)" || { echo "usage: make validate DATA=DIR [NAME=classifier] [VALIDATE_ARGS=...]" >&2; exit 2; }
	$(PY) -m mar_builder validate --data "$(DATA)" --mar model_store/$(or $(GIVEN_NAME),classifier).mar $(VALIDATE_ARGS)

# What the benchmark alone needs (requirements-bench.txt; captum, which the stock handler imports, is in requirements.txt).
$(BENCH_STAMP): $(STAMP) requirements-bench.txt
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-bench.txt
	touch $@

# Each runtime's in-process limit and archive at 1/4/8 clients, the stock handler, 12 MP photos: about 12 minutes.
# BENCH_ARGS passes options on, e.g. BENCH_ARGS="--seconds 10 --clients 4".
bench: venv java $(BENCH_STAMP)
	$(PY) -m benchmarks.bench $(BENCH_ARGS)

test: venv java lint
	$(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check mar_builder handler tests benchmarks

clean:
	rm -rf model_store/*.mar logs key_file.json
