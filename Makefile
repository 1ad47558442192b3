# Two commands do everything on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv java build demo stop test lint clean

venv: $(STAMP)

# Re-installs only when the pinned requirements change; pip takes torch from wheels on disk.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "error: Python 3.11 is required, got " + sys.version.split()[0])'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
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

test: venv java lint
	$(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check mar_builder handler tests

clean:
	rm -rf model_store/*.mar logs key_file.json
