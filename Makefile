# The README's two commands: `make study` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The oldest Python the locks install on (pyproject.toml's requires-python says the same;
# tests/test_packaging.py checks every pin against it).
PYTHON_FLOOR := 3.11.5
TORCH_SPEC ?= torch==2.13.0
CPU_INDEX := https://download.pytorch.org/whl/cpu
# Whether PyTorch's CPU index answers from here ("yes" or empty). Where it does not (an
# offline machine with a mirror or a wheel folder), torch comes from the configured
# indexes, which must then hold its CPU build; the install says which build it got.
CPU_INDEX_ANSWERS ?= $(shell $(PYTHON) -c "import urllib.request as r; r.urlopen('$(CPU_INDEX)/torch/', timeout=5)" >/dev/null 2>&1 && echo yes)
# The build of torch: cuda where an NVIDIA driver lists a GPU (nvidia-smi -L), else cpu.
# `make install TORCH_BUILD=cpu` (or cuda) chooses by hand.
ifeq ($(origin TORCH_BUILD),undefined)
TORCH_BUILD := $(if $(shell nvidia-smi -L 2>/dev/null | grep '^GPU'),cuda,cpu)
endif
ifeq ($(filter cpu cuda,$(TORCH_BUILD)),)
$(error TORCH_BUILD=$(TORCH_BUILD): choose cpu or cuda)
endif
# The locks: the full environment pinned (`make lock`, `make lock-gpu` write them).
# cpu: torch from the CPU index, where pip takes 2.13.0+cpu (it ranks above 2.13.0) with
# no CUDA libraries; cuda: plain PyPI's torch 2.13.0 (its CUDA build on Linux) and the
# CUDA libraries it needs, pinned. TORCH_INDEX names another index for torch (e.g. a
# CUDA version's, https://download.pytorch.org/whl/cu126, with LOCK=$(CPU_LOCK): the
# GPU lock pins the CUDA libraries of PyPI's build). With LOCK= the install resolves
# pyproject.toml's ranges instead.
CPU_LOCK := requirements/cpu.lock
GPU_LOCK := requirements/gpu.lock
ifeq ($(TORCH_BUILD),cuda)
LOCK ?= $(GPU_LOCK)
TORCH_INDEX ?=
else
LOCK ?= $(CPU_LOCK)
ifeq ($(origin TORCH_INDEX),undefined)
TORCH_INDEX := $(if $(CPU_INDEX_ANSWERS),$(CPU_INDEX))
endif
endif
TORCH_PIP_ARGS ?= $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
PIP_TOOLS ?= pip-tools==7.6.2
# Extra pip-compile options for `make lock` and `make lock-gpu` (e.g. an --index-url).
LOCK_ARGS ?=
PRESET ?= demo
OUT ?= study
# make verify: the study whose executed notebooks are checked, and which of them
# (names as in $(STUDY)/notebooks, without .ipynb; empty: all).
STUDY ?= $(OUT)
NOTEBOOKS ?=
STAMP := $(VENV)/.installed
# The torch build installed, named by build and index: switching either reinstalls torch
# (2.13.0+cpu satisfies torch==2.13.0, so pip alone would keep the build it has).
TORCH_STAMP := $(VENV)/.torch-$(TORCH_BUILD)-$(shell printf '%s' '$(TORCH_INDEX)' | cksum | cut -d' ' -f1)

.PHONY: install tools study test test-fast lint bench book clean lock lock-gpu verify screenshots

$(PY):
	@$(PYTHON) -c 'import sys; v = "$(PYTHON_FLOOR)"; sys.exit(sys.version_info[:3] < tuple(map(int, v.split("."))))' || \
	  { echo "slicelib needs Python >= $(PYTHON_FLOOR) ($(PYTHON) is $$($(PYTHON) -V 2>&1)): make install PYTHON=python3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(TORCH_STAMP): | $(PY)
	rm -f $(VENV)/.torch-*
	$(PY) -m pip show -q torch >/dev/null 2>&1 && $(PY) -m pip uninstall -y -q torch || true
	touch $@

$(STAMP): pyproject.toml $(wildcard $(LOCK)) $(TORCH_STAMP) | $(PY)
	$(PY) -m pip install -q --upgrade pip
ifneq ($(wildcard $(LOCK)),)
	$(PY) -m pip install -q -r $(LOCK) $(TORCH_PIP_ARGS)
	$(PY) -m pip install -q --no-deps -e .
else
	$(PY) -m pip install -q "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	$(PY) -m pip install -q -e ".[study,test,pacs]"
endif
ifeq ($(TORCH_BUILD),cpu)
	@$(PY) -c "import sys, torch; sys.exit(torch.version.cuda is not None)" || \
	  echo "make install: no GPU here, but torch $$($(PY) -c 'import torch; print(torch.__version__)') is a CUDA build (PyTorch's CPU index did not answer); for the CPU build: make install TORCH_INDEX=$(CPU_INDEX)" >&2
endif
	touch $(STAMP)

# Regenerate the CPU lock from pyproject.toml (core, study, test and pacs) with torch at
# TORCH_SPEC from the CPU index (where it does not answer, the configured indexes must
# hold the CPU build). The CPU wheel's local label (+cpu) is dropped, so that the lock
# installs from the CPU index and from plain PyPI alike.
lock: | $(PY)
	$(PY) -m pip install -q "$(PIP_TOOLS)"
	mkdir -p $(dir $(CPU_LOCK))
	printf '%s\n' "$(TORCH_SPEC)" > $(dir $(CPU_LOCK)).torch-constraint.txt
	CUSTOM_COMPILE_COMMAND="make lock" $(PY) -m piptools compile --quiet \
	  --extra study --extra test --extra pacs --strip-extras --allow-unsafe \
	  --no-emit-index-url --no-emit-find-links --constraint $(dir $(CPU_LOCK)).torch-constraint.txt \
	  $(if $(CPU_INDEX_ANSWERS),--extra-index-url $(CPU_INDEX)) $(LOCK_ARGS) --output-file $(CPU_LOCK) pyproject.toml
	sed -i.bak -E 's/^(torch==[^+]+)[+][a-z0-9.]+$$/\1/' $(CPU_LOCK) && rm -f $(CPU_LOCK).bak $(dir $(CPU_LOCK)).torch-constraint.txt

# The GPU lock: every pin of the CPU lock, and the CUDA libraries (nvidia-*, cuda-*,
# triton) that plain PyPI's build of the same torch needs on Linux x86_64. Run after
# `make lock`, against plain PyPI (no CPU index, no local wheel of torch).
lock-gpu: | $(PY)
	$(PY) -m pip install -q "$(PIP_TOOLS)"
	CUSTOM_COMPILE_COMMAND="make lock-gpu" $(PY) -m piptools compile --quiet \
	  --extra study --extra test --extra pacs --strip-extras --allow-unsafe \
	  --no-emit-index-url --no-emit-find-links --constraint $(CPU_LOCK) \
	  $(LOCK_ARGS) --output-file $(GPU_LOCK) pyproject.toml

install: $(STAMP)

study: install
	$(VENV)/bin/slicelib study --preset $(PRESET) --out $(OUT)

lint: install
	$(PY) -m ruff check slicelib tests benchmarks scripts conftest.py
	$(PY) -m ruff format --check slicelib tests benchmarks scripts conftest.py
	$(PY) -m mypy

# The DICOM writer's tests validate the output with an independent tool (dicom3tools).
# The DICOMweb tests run a real Orthanc with its DICOMweb plugin (tests/orthanc_server.py):
# installed where apt-get runs as root, elsewhere those tests skip and say why. The
# package's own service is disabled: the tests start Orthanc themselves on a free port.
ORTHANC_PLUGIN ?= /usr/share/orthanc/plugins/libOrthancDicomWeb.so
SBIN_PATH := $$PATH:/usr/sbin:/usr/local/sbin
tools:
	@command -v dciodvfy >/dev/null || { \
	  command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] || \
	    { echo "make test needs dciodvfy: install the Debian package dicom3tools" >&2; exit 1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dicom3tools >/dev/null; }
	@{ PATH="$(SBIN_PATH)" command -v Orthanc >/dev/null && [ -e $(ORTHANC_PLUGIN) ]; } || { \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq orthanc orthanc-dicomweb >/dev/null && \
	    { ! command -v systemctl >/dev/null || systemctl disable --now orthanc >/dev/null 2>&1 || true; }; \
	  else \
	    echo "the DICOMweb tests against Orthanc will skip: install the Debian packages orthanc and orthanc-dicomweb" >&2; \
	  fi; }

test: lint tools
	$(PY) -m pytest tests notebooks --nbval-lax

# Re-execute the executed notebooks of $(STUDY) in a fresh workspace (same preset and
# seeds) and compare every output with nbval; fails naming the cell that differs.
verify: install
	$(VENV)/bin/slicelib verify $(STUDY) $(addprefix --only ,$(NOTEBOOKS))

# Everything but the smoke study and the notebooks (marked slow in conftest.py).
test-fast: lint tools
	$(PY) -m pytest tests -m "not slow"

# Every page of the built book at 1280 and 420 px (first screen and whole page) into
# $(SHOTS), in headless Chromium (the Debian package chromium).
BOOK_HTML ?= _build/html
SHOTS ?= screenshots
screenshots:
	$(PYTHON) scripts/screenshots.py $(BOOK_HTML) $(SHOTS)

bench: install
	$(PY) -m benchmarks

clean:
	rm -rf _build $(OUT) $(SHOTS) .pytest_cache .mypy_cache .ruff_cache
