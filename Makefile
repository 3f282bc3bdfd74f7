# The README's two commands: `make study` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build on this kind of machine; on a GPU node pick the CUDA build, e.g.
#   make study TORCH_SPEC=torch==2.13.0 TORCH_PIP_ARGS=
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
PRESET ?= demo
OUT ?= study
STAMP := $(VENV)/.installed

.PHONY: install tools study test test-fast lint bench book clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	$(PY) -m pip install -q -e ".[book,test]"
	touch $(STAMP)

install: $(STAMP)

study: install
	$(VENV)/bin/slicelib study --preset $(PRESET) --out $(OUT)

lint: install
	$(PY) -m ruff check slicelib tests benchmarks conftest.py
	$(PY) -m ruff format --check slicelib tests benchmarks conftest.py
	$(PY) -m mypy

# The DICOM writer's tests validate the output with an independent tool (dicom3tools).
tools:
	@command -v dciodvfy >/dev/null || { \
	  command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] || \
	    { echo "make test needs dciodvfy: install the Debian package dicom3tools" >&2; exit 1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dicom3tools >/dev/null; }

test: lint tools
	$(PY) -m pytest tests notebooks --nbval-lax

# Everything but the smoke study and the notebooks (marked slow in conftest.py).
test-fast: lint tools
	$(PY) -m pytest tests -m "not slow"

bench: install
	$(PY) -m benchmarks

clean:
	rm -rf _build $(OUT) .pytest_cache .mypy_cache .ruff_cache
