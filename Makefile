# Everything runs in a project-local virtual environment, made on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv demo test test-cuda test-all docs lint bench

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

demo: venv
	$(BIN)/probae demo

test: venv
	$(BIN)/python -m pytest

# The suite again on an emulated CUDA device (the CPU with CUDA's device rules, see
# ../shared/fakecuda/README.md): device mixes, host reads and syncs fail as on a GPU.
FAKECUDA ?= ../shared/fakecuda
test-cuda: venv
	PYTHONPATH=$(abspath $(FAKECUDA)) FAKECUDA=1 FAKECUDA_STRICT_0D=1 PROBAE_DEVICE=cuda \
		$(BIN)/python -m pytest

test-all: venv
	$(BIN)/python -m pytest -m "slow or not slow"

docs: venv
	$(BIN)/python -m sphinx -W --keep-going -q -b html docs docs/_build/html

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: venv
	$(BIN)/python bench/overhead.py
