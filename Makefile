# The README's two commands: `make study` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
# Where pip also looks for torch. Empty: the configured indexes (plain PyPI gives the
# CUDA build on Linux). Without a GPU on plain PyPI (README, "Installing"):
#   make study TORCH_INDEX=https://download.pytorch.org/whl/cpu
# pip then takes torch 2.13.0+cpu, which ranks above 2.13.0.
TORCH_INDEX ?=
TORCH_PIP_ARGS ?= $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
# The lock of the full CPU environment (`make lock` writes it); with LOCK= the install
# resolves pyproject.toml's ranges instead.
LOCK ?= requirements/cpu.lock
PIP_TOOLS ?= pip-tools==7.6.2
PRESET ?= demo
OUT ?= study
# make verify: the study whose executed notebooks are checked, and which of them
# (names as in $(STUDY)/notebooks, without .ipynb; empty: all).
STUDY ?= $(OUT)
NOTEBOOKS ?=
STAMP := $(VENV)/.installed

.PHONY: install tools study test test-fast lint bench book clean lock verify

$(STAMP): pyproject.toml $(wildcard $(LOCK))
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
ifneq ($(wildcard $(LOCK)),)
	$(PY) -m pip install -q -r $(LOCK) $(TORCH_PIP_ARGS)
	$(PY) -m pip install -q --no-deps -e .
else
	$(PY) -m pip install -q "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	$(PY) -m pip install -q -e ".[study,test,pacs]"
endif
	touch $(STAMP)

# Regenerate the lock from pyproject.toml (core, study, test and pacs) with torch at
# TORCH_SPEC. The CPU wheel's local label (+cpu) is dropped, so that the lock installs
# from the CPU index and from plain PyPI alike.
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(PIP_TOOLS)"
	mkdir -p $(dir $(LOCK))
	printf '%s\n' "$(TORCH_SPEC)" > $(dir $(LOCK)).torch-constraint.txt
	CUSTOM_COMPILE_COMMAND="make lock" $(PY) -m piptools compile --quiet \
	  --extra study --extra test --extra pacs --strip-extras --allow-unsafe \
	  --no-emit-index-url --no-emit-find-links --constraint $(dir $(LOCK)).torch-constraint.txt \
	  $(TORCH_PIP_ARGS) --output-file $(LOCK) pyproject.toml
	sed -i.bak -E 's/^(torch==[^+]+)[+][a-z0-9.]+$$/\1/' $(LOCK) && rm -f $(LOCK).bak $(dir $(LOCK)).torch-constraint.txt

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

bench: install
	$(PY) -m benchmarks

clean:
	rm -rf _build $(OUT) .pytest_cache .mypy_cache .ruff_cache
