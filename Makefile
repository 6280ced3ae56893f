# `make test` and `make demo` create (or reuse) .venv and install everything the project needs into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The PyTorch build to install; override for another platform, e.g. TORCH_PKGS="torch torchvision".
TORCH_PKGS ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: install test demo bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PKGS)
	# TORCH_PKGS again: with torch pinned the resolver never backtracks into other torch builds (litert-torch's
	# typing-extensions<4.13 otherwise sends it through old CUDA wheels for many minutes)
	$(PY) -m pip install --quiet $(TORCH_PKGS) -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# OMP_WAIT_POLICY=PASSIVE: OpenMP threads sleep at barriers instead of spinning (several times faster on busy cores).
demo: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/swiftformer demo

bench: $(STAMP)
	$(PY) benchmarks/bench_fused.py

clean:
	rm -rf $(VENV) build *.egg-info
