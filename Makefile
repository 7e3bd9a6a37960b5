# greenbatch: `make run` serves the dashboard on http://127.0.0.1:8000 (data in ./data/); `make test` runs
# `make lint`, then the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench readme clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/activate
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/activate
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.installed $@

# exec: no shell between make and the server, so a Ctrl-C that ends in a clean stop is not reported as an "Interrupt".
run: $(VENV)/.installed
	GREENBATCH_DATA_DIR=$${GREENBATCH_DATA_DIR:-./data} exec $(BIN)/python wsgi.py

# The house's rules (pyproject.toml): style, the one-way layers, and strict types below Flask.
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check app tests bench wsgi.py
	$(BIN)/ruff format --check app tests bench wsgi.py
	$(BIN)/lint-imports
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/run.py $(BENCH_ARGS)

readme: $(VENV)/.installed
	$(BIN)/python -c 'from app.core.config import update_readme; update_readme("README.md")'

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
