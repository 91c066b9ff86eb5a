# Two commands from a fresh clone: `make demo` and `make test` (each creates .venv and installs).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deps-installed
DEMO_STAMP := $(VENV)/.demo-deps-installed
DEMO_DIR := build/demo

.PHONY: install demo test test-fast lint bench clean

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	touch $@

# the whole development set (tests, torch for training and the torch backend, converters)
$(STAMP): setup.cfg pyproject.toml | $(VENV)/.created
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps onnx2torch==1.5.15
	touch $(STAMP)

# the demo needs only the product and the two sample photos' packages ([demo]): no torch
$(DEMO_STAMP): setup.cfg pyproject.toml | $(VENV)/.created
	$(PY) -m pip install -q -e '.[demo]'
	touch $(DEMO_STAMP)

# the package itself is installed editable, so the console script always runs the checkout;
# tests/test_install.py checks the non-editable install (wheel with its models) separately
install: $(STAMP)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .

demo: $(DEMO_STAMP)
	mkdir -p $(DEMO_DIR)
	$(VENV)/bin/deid-edit sample $(DEMO_DIR)/sample.mp4
	$(VENV)/bin/deid-edit run $(DEMO_DIR)/sample.mp4 -o $(DEMO_DIR)/sample.anon.mp4 --force --save-plan $(DEMO_DIR)/sample.deid.json
	@echo "Anonymized clip: $(abspath $(DEMO_DIR)/sample.anon.mp4) (plan: $(abspath $(DEMO_DIR)/sample.deid.json))"

# Blender as a Python module (PyPI bpy; 5.0.x needs Python 3.11, ~1 GB) for tests/test_blender_addon.py, apart from .venv
BPY_PYTHON ?= python3.11
BPY_VERSION ?= 5.0.1
BPY_VENV := .venv-bpy
BPY_STAMP := $(BPY_VENV)/.bpy-$(BPY_VERSION)-installed

.PHONY: bpy-venv
bpy-venv: $(BPY_STAMP)

$(BPY_STAMP):
	$(BPY_PYTHON) -m venv $(BPY_VENV)
	$(BPY_VENV)/bin/python -m pip install -q bpy==$(BPY_VERSION)
	touch $(BPY_STAMP)

test: install bpy-venv
	$(PY) -m ruff check deid_edit tests benchmarks tools plugins
	$(PY) -m pytest

# the unit tests and a few end-to-end runs on the generated sample, under two minutes on 2 cores:
# without the slow tests (tests/: @pytest.mark.slow), real footage (media) or CUDA (gpu);
# `make test` runs everything
test-fast: install
	$(PY) -m ruff check deid_edit tests benchmarks tools plugins
	$(PY) -m pytest -m "not slow and not media and not gpu" -q

bench: install
	$(PY) benchmarks/speed.py

clean:
	rm -rf $(VENV) $(BPY_VENV) build dist *.egg-info
