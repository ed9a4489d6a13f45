# Two entry points for a fresh machine (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint bench docs

# [worker] is llama-cpp-python, compiled from source the first time (minutes on 2 cores);
# pip's wheel cache makes every later install of the same version a quick copy.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev,worker]'
	touch $@

install: $(BIN)/.installed

# A real inference on a fresh machine: `keeper infer` starts a local queen and hive,
# writes builtin:tiny into the hive's catalog and spawns a worker (all narrated), prints
# the tokens as they arrive; then the status tables, and everything it started is stopped.
demo: install
	$(BIN)/keeper infer --model builtin:tiny --seed 7 "the queen bee says"
	$(BIN)/keeper status
	$(BIN)/keeper hive stop
	$(BIN)/keeper queen stop

# The whole suite, exactly as CI runs it (.ci/run calls this).
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install
	for script in bench/bench_*.py; do $(BIN)/python $$script --quick || exit 1; done

# docs/cli.md is generated from the Typer app plus docs/cli-notes.md; a test keeps it current.
docs: install
	$(BIN)/python -m typer keeper.cli utils docs --name keeper --output docs/cli.md
	cat docs/cli-notes.md >> docs/cli.md
