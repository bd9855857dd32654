# Two commands for a newcomer (see README):  `make demo`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	PYTHON=$(BIN)/python bash scripts/install_torch.sh
	$(BIN)/python -m pip install -q -e ".[all]"

install-test: $(BIN)/python
	PYTHON=$(BIN)/python bash scripts/install_torch.sh
	$(BIN)/python -m pip install -q -e ".[test]"
	bash scripts/install_browser.sh   # Debian's chromium for the UI tests (tests/ui)

# The main job: offline end-to-end demo on the bundled models.
demo: install
	$(BIN)/ragtune models pull gemma-3-270m
	$(BIN)/ragtune demo

# Lint + types, then the fast suite + the slow tests that use the real bundled models (what CI runs).
test: install-test
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/mypy src
	RAGTUNE_SLOW=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
