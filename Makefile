# Two commands from a fresh clone: `make demo` and `make test` (each creates .venv and installs).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deps-installed
DEMO_DIR := build/demo

.PHONY: install demo test lint bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# the package itself is installed editable, so the console script always runs the checkout;
# tests/test_install.py checks the non-editable install (wheel with its models) separately
install: $(STAMP)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .

demo: install
	mkdir -p $(DEMO_DIR)
	$(VENV)/bin/deid-edit sample $(DEMO_DIR)/sample.mp4
	$(VENV)/bin/deid-edit run $(DEMO_DIR)/sample.mp4 -o $(DEMO_DIR)/sample.anon.mp4 --force --save-plan $(DEMO_DIR)/sample.deid.json
	@echo "Anonymized clip: $(abspath $(DEMO_DIR)/sample.anon.mp4) (plan: $(abspath $(DEMO_DIR)/sample.deid.json))"

test: install
	$(PY) -m ruff check deid_edit tests benchmarks tools
	$(PY) -m pytest

bench: install
	$(PY) benchmarks/speed.py

clean:
	rm -rf $(VENV) build dist *.egg-info
