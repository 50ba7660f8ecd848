# Two commands for users: `make serve` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test fuzz lint bench serve clean compose-test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Lint, the import contracts (pyproject.toml [tool.importlinter]), then every test.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest -q

# Embedded mode: SQLite + local executor in ./sbaudit-data, http://127.0.0.1:8000. Prints the admin key on first start.
serve: $(STAMP)
	$(BIN)/sbaudit serve

# Property-based fuzzing of every API operation (schemathesis) with 500 examples each; `make test` runs 50.
fuzz: $(STAMP)
	SBAUDIT_FUZZ_EXAMPLES=$${SBAUDIT_FUZZ_EXAMPLES:-500} $(BIN)/python -m pytest -q --timeout=3600 tests/e2e/test_fuzz_api.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m mypy

# The shipped docker-compose.yml built, brought up and checked over HTTP, then `docker compose down -v`
# (docker/compose-test.sh). Installs Docker and Compose v2 from Debian packages where missing: run as root.
compose-test: $(STAMP)
	PYTHON=$(BIN)/python docker/compose-test.sh

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/pip install --quiet --no-deps torchattacks==3.5.1
	touch $(BENCH_STAMP)

# Engine benchmarks; each prints one JSON line (see BENCHMARKS.md).
bench: $(BENCH_STAMP)
	$(BIN)/python bench/train_lms5.py
	$(BIN)/python bench/ensemble.py
	$(BIN)/python bench/uap.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
