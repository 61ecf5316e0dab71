# The README's two commands. Each sets up its own virtual environment in .venv/ on a fresh machine.
# torch==2.13.0 is installed first, from its CPU build, so that no CUDA build is ever pulled.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint proto bench

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/spikeshot-client info clients/examples/wave.aedat4

lint: $(BIN)/.installed
	$(BIN)/ruff check .

# pytest exits 5 when it selects no test: a suite that ran nothing has not passed.
test: lint
	$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest selected no test"; fi; exit $$rc

proto: $(BIN)/.installed
	$(BIN)/python -m spikeshot.v1.regenerate
