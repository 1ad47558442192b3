# Two commands do everything on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The kserve SDK's own venv: its pins (psutil<6) cannot share TorchServe's (requirements-clients.txt).
CLIENTS_VENV := .venv-clients
CLIENTS_STAMP := $(CLIENTS_VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: venv java nginx build demo serve predict stop test lint clean scale soak bench validate

venv: $(STAMP) $(CLIENTS_STAMP)

# Re-installs only when the pinned requirements change; pip takes torch from wheels on disk.
$(STAMP): requirements.txt requirements-dev.txt requirements-int8.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "error: Python 3.11 is required, got " + sys.version.split()[0])'
	@echo "Installing the pinned stack into $(VENV): torch, torchvision, TorchServe, the default model (about 2-3 minutes the first time)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check $$(grep -v -e '^#' -e '^nncf==' requirements-int8.txt)
	@# nncf without openvino-telemetry (no usage data sent), after its other dependencies: a --no-deps install
	@# is not checked for conflicts, so pip reports none.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps $$(grep '^nncf==' requirements-int8.txt)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

$(CLIENTS_STAMP): requirements-clients.txt
	@echo "Installing the kserve SDK into $(CLIENTS_VENV), for the deploy tests' client calls"
	test -x $(CLIENTS_VENV)/bin/python || $(PYTHON) -m venv $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/python -m pip install -q --disable-pip-version-check -r requirements-clients.txt
	touch $@

java:
	@scripts/ensure_java.sh

# Debian's nginx for the nginx front's e2e tests (docs/security.md); installed, never left running.
nginx:
	@scripts/ensure_nginx.sh

model_store/classifier.mar: $(STAMP) $(wildcard mar_builder/*.py mar_builder/model/*.py mar_builder/archive/*.py handler/*)
	./build_mar.sh

build: model_store/classifier.mar

# The server targets act on this checkout's own TorchServe (`mar-builder serve`; its files in .torchserve/).
# PORTS=BASE (BASE to BASE+4) or PORTS=auto and CONFIG=FILE choose where it listens; NAME= names archives.
# FRONT=HOST:PORT also starts the nginx front there (docs/security.md).
SERVE_FLAGS = $(if $(PORTS),--ports $(PORTS)) $(if $(CONFIG),--config $(CONFIG)) $(if $(FRONT),--front $(FRONT))
# NAME only from the command line: some shells export NAME (WSL: the host name).
GIVEN_NAME = $(if $(filter command line,$(origin NAME)),$(NAME))
MODEL_FLAG = $(if $(GIVEN_NAME),--model $(GIVEN_NAME))

demo: venv java $(if $(FRONT),nginx) build
	scripts/demo.sh $(SERVE_FLAGS)

serve: venv java $(if $(FRONT),nginx)
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

# An archive of model_store/ on labelled photos: eager vs .pt vs served (see docs/validate.md); exits 1
# below the agreement threshold. VALIDATE_ARGS passes options on, e.g. VALIDATE_ARGS="--labels-csv labels.csv".
validate: venv java $(if $(filter-out classifier,$(GIVEN_NAME)),,build)
	@test -n "$(DATA)" || { echo "usage: make validate DATA=DIR [NAME=classifier] [VALIDATE_ARGS=...]" >&2; exit 2; }
	$(PY) -m mar_builder validate --data "$(DATA)" --mar model_store/$(or $(GIVEN_NAME),classifier).mar $(VALIDATE_ARGS)

# What the benchmark alone needs (requirements-bench.txt; captum, which the stock handler imports, is in requirements.txt).
$(BENCH_STAMP): $(STAMP) requirements-bench.txt
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-bench.txt
	touch $@

# Each runtime's in-process limit and archive at 1/4/8 clients (int8 too, calibrated on --calibration DIR, by default
# ../shared/imagenet-sample when there: its build adds minutes, more when accuracy control runs), the stock handler,
# 12 MP photos: about 12 minutes without int8.
# BENCH_ARGS passes options on, e.g. BENCH_ARGS="--seconds 10 --clients 4".
bench: venv java $(BENCH_STAMP)
	$(PY) -m benchmarks.bench $(BENCH_ARGS)

# The image stack: TorchServe's official 0.12.0 images' Python (3.9) and pins, for the e2e tests in tests/image_stack/.
IMAGE_VENV := .venv-image
IMAGE_STAMP := $(IMAGE_VENV)/.installed
# The image stack's wheels, kept outside the checkout: pip's own cache stays empty here (the index's answers are
# not cached), and a fresh clone on the same machine (CI) then installs without downloading 3 GB again.
IMAGE_WHEELS ?= $(HOME)/.cache/mar-builder/image-wheels
.PHONY: image-venv

# requirements-image.txt into .venv-image with Python 3.9: torch 2.4.0 from PyPI is a CUDA build with its
# nvidia-* wheels, about 3 GB: 18 minutes the first time on this machine, then from IMAGE_WHEELS (docs/images.md).
# Fails, saying why, where no Python 3.9 can be found: `make test` needs this stack.
image-venv: $(IMAGE_STAMP)

$(IMAGE_STAMP): requirements-image.txt
	@echo "Installing TorchServe's official image stack into $(IMAGE_VENV): Python 3.9, torch 2.4.0, TorchServe 0.12.0 (about 3 GB the first time)"
	@test -x $(IMAGE_VENV)/bin/python || { python39="$${PYTHON39:-$$(scripts/find_python39.sh)}" && \
	  "$$python39" -m venv $(IMAGE_VENV); }
	@$(IMAGE_VENV)/bin/python -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 9) else "error: $(IMAGE_VENV) is not Python 3.9 (" + sys.version.split()[0] + "): rm -r $(IMAGE_VENV) and make image-venv")'
	$(IMAGE_VENV)/bin/python -m pip download -q --disable-pip-version-check -d $(IMAGE_WHEELS) -r requirements-image.txt
	$(IMAGE_VENV)/bin/python -m pip install -q --disable-pip-version-check --no-index --find-links $(IMAGE_WHEELS) \
	  -r requirements-image.txt
	touch $@

test: venv image-venv java nginx lint
	$(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check mar_builder handler tests benchmarks

clean:
	rm -rf model_store/*.mar logs key_file.json
