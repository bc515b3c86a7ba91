# The two commands a fresh machine needs: `make demo` and `make test`.
# Each creates (or reuses) the virtual environment in .venv and installs what it needs,
# torch==2.13.0 first so that no later requirement pulls a multi-GB CUDA build.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Two stamps: the demo needs only the package and its Hugging Face extra; the tests add pytest,
# the harness, W&B, datasets, tiktoken (about a minute more of installs on a fresh machine).
DEMO_STAMP := $(VENV)/.megatron-meta-demo
TEST_STAMP := $(VENV)/.megatron-meta-dev
DEMO_DIR ?= runs/study-demo

.PHONY: venv demo test test-fast bench bench-preprocess bench-throughput gpu-proof clean

venv: $(TEST_STAMP)

$(DEMO_STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[hf]'
	touch $@

$(TEST_STAMP): $(DEMO_STAMP)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# The demo study (examples/study_demo.yaml) on this machine; done stages are skipped on re-runs.
demo: $(DEMO_STAMP)
	$(PY) -m megatron_meta.cli demo --nproc 2 --output-dir $(DEMO_DIR)

test: venv
	$(PY) -m pytest -q --durations=30 tests

test-fast: venv
	$(PY) -m pytest -q tests -m "not distributed and not slow"

bench: bench-preprocess bench-throughput

bench-preprocess: venv
	$(PY) tools/benchmark_preprocess.py

bench-throughput: venv
	$(PY) tools/benchmark_throughput.py

# On a GPU machine: the gpu-marked tests and paper-1b throughput -> benchmarks/gpu.md
# (tools/gpu_proof.sh; WHEELS=DIR installs from a wheel folder, offline). Without CUDA it says so.
gpu-proof:
	bash tools/gpu_proof.sh

# What make created, no more: other runs under runs/ are the user's.
clean:
	rm -rf $(VENV) $(DEMO_DIR) *.egg-info
