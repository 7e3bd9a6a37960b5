# greenbatch: `make run` serves the dashboard on http://127.0.0.1:8000 (data in ./data/); `make test` runs
# `make lint`, then the suite; `make cli ARGS='...'` runs the command line client.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench bench-big cluster readme cli clean

$(BIN)/activate:
	@echo "greenbatch: creating $(VENV) (first run only)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The project itself goes in editable (--no-deps: the pins above are the dependencies), for $(BIN)/greenbatch.
$(VENV)/.installed: requirements.txt pyproject.toml | $(BIN)/activate
	@echo "greenbatch: installing dependencies into $(VENV) (about a minute, first run only)"
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --quiet --no-deps -e .
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt requirements-cluster.txt pyproject.toml | $(BIN)/activate
	@echo "greenbatch: installing dependencies and development tools into $(VENV) (a few minutes, first run only)"
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --quiet --no-deps -e .
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

# Two pytest workers, a test file each at a time (a file's module-scoped servers stay in one worker): most tests
# wait on servers they started, so two run in about half the time on 2 cores. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: lint
	$(BIN)/python -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)

# bench/RESULTS.md: BENCH_ARGS=--quick (a smoke run), --profile, or --cluster (issue 16's cluster rows, bench/cluster.py).
bench: $(VENV)/.installed-dev
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Issue 15's table: batches of 100,000 and 1,000,000 URLs end to end (BENCH_ARGS=--quick: 20,000 and 100,000).
bench-big: $(VENV)/.installed-dev
	$(BIN)/python bench/big.py $(BENCH_ARGS)

# A throwaway local cluster (cluster mode, docs/deploy.md): PostgreSQL and redis-server in a temp folder,
# 2 web processes behind nginx, 2 workers; prints the URL; Ctrl-C stops it all (ARGS='--workers 3 --keep').
cluster: $(VENV)/.installed-dev
	@exec $(BIN)/python -m tests.support.cluster $(ARGS)

# The command line client: make cli ARGS='submit urls.txt --follow' (the same as $(BIN)/greenbatch submit ...).
cli: $(VENV)/.installed
	@$(BIN)/greenbatch $(ARGS)

readme: $(VENV)/.installed
	$(BIN)/python -c 'from app.core.config import update_readme; update_readme("README.md")'

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
