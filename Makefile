# `make test` and `make demo` create (or reuse) .venv and install everything the project needs into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The PyTorch build to install; override for another platform, e.g. TORCH_PKGS="torch torchvision".
TORCH_PKGS ?= torch==2.14.1 torchvision==0.29.1
# The package index PyTorch comes from; empty: PyPI, whose Linux wheels are the CUDA build (a ~7 GB .venv, over
# 3 GB of it NVIDIA libraries a machine without an NVIDIA GPU never uses). The CPU build instead:
#   make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
TORCH_FROM := $(if $(TORCH_INDEX),from $(TORCH_INDEX),from PyPI: on Linux the CUDA build (a ~7 GB .venv); \
	without an NVIDIA GPU the CPU build is smaller: make $(or $(MAKECMDGOALS),install) TORCH_INDEX=https://download.pytorch.org/whl/cpu)
STAMP := $(VENV)/.installed

.PHONY: install test demo bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "installing $(TORCH_PKGS) $(TORCH_FROM)"
	$(PY) -m pip install --progress-bar on $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(TORCH_PKGS)
	# TORCH_PKGS again: with torch pinned the resolver never backtracks into other torch builds (litert-torch's
	# typing-extensions<4.13 otherwise sends it through old CUDA wheels for many minutes)
	$(PY) -m pip install --quiet $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) $(TORCH_PKGS) -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(VENV)/bin/swiftformer demo

bench: $(STAMP)
	$(PY) benchmarks/bench_fused.py

clean:
	rm -rf $(VENV) build *.egg-info
