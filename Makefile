# adrlab: every target installs what it needs first, so any of them works as the
# first command typed on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Override to install a different torch build, e.g. TORCH_SPEC="torch==2.13.0 --index-url <your mirror>".
TORCH_SPEC ?= torch==2.13.0
SWEEP  ?= lambda_schedule
# Empty: one worker per GPU, else one per CPU core (torch threads divided among them).
WORKERS ?=
WORKERS_FLAG = $(if $(WORKERS),--workers $(WORKERS))
ADR    ?=
# The scale `make adr` runs (an experiment the ADR declares: smoke, smoke_wikitext2, paper, ...).
SCALE  ?= smoke
ARGS   ?=
# Optuna storage shared by many nodes (postgresql://user@host/db); empty: $ADRLAB_STORAGE or a local journal.
STORAGE ?=
STORAGE_FLAG = $(if $(STORAGE),--storage $(STORAGE))

.PHONY: install run test lint sweep ui dashboard bench bench-readback report adr clean

install: $(STAMP)

# A torch that the base interpreter can already import (say a CUDA build on a GPU
# box) is kept by giving the venv access to system site-packages; otherwise the
# pinned CPU build goes in before the project, so the project's unpinned `torch`
# requirement is already satisfied and pip never pulls the multi-GB CUDA wheels.
$(STAMP): pyproject.toml
	@set -e; \
	if [ ! -x $(BIN)/python ]; then \
	  if $(PYTHON) -c "import torch" >/dev/null 2>&1; then \
	    echo "adrlab: keeping the torch already importable by $(PYTHON)"; \
	    $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else \
	    $(PYTHON) -m venv $(VENV); \
	  fi; \
	fi; \
	if ! $(BIN)/python -c "import torch" >/dev/null 2>&1; then \
	  echo "adrlab: installing $(TORCH_SPEC)"; \
	  $(BIN)/pip install -q $(TORCH_SPEC); \
	fi; \
	$(BIN)/pip install -q -e ".[dev]"; \
	touch $(STAMP)

run: install
	$(BIN)/adrlab run $(ARGS)

test: install
	$(BIN)/python -m pytest $(ARGS)

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

sweep: install
	$(BIN)/adrlab sweep $(SWEEP) $(WORKERS_FLAG) $(ARGS)

ui: install
	$(BIN)/adrlab ui

dashboard: install
	$(BIN)/adrlab dashboard $(SWEEP)

bench: install
	$(BIN)/adrlab bench $(ARGS)

report: install
	$(BIN)/adrlab report $(ARGS)

adr: install
	@if [ -z "$(ADR)" ]; then echo "usage: make adr ADR=0002 [SCALE=smoke_wikitext2]"; exit 2; fi
	$(BIN)/adrlab adr run $(ADR) --scale $(SCALE) $(WORKERS_FLAG) $(STORAGE_FLAG)
	$(BIN)/adrlab report --adr $(ADR) --scale $(SCALE)

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache

# Reading back at scale: a synthetic store (ADR-0004's sweep arms with 50 and 500 trials each,
# among 1,000 and 10,000 unrelated runs) and the time `adrlab report --adr` and the sweep report take.
bench-readback: install
	$(BIN)/adrlab bench --suite readback $(ARGS)
