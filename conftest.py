"""Root pytest configuration, shared by the unit tests and the notebook checks.

The notebooks resolve ``out_dir = None`` to ``$SLICELIB_HOME/<preset>``; the test
session points that at a fresh temporary folder so that nothing outside it is read
or written, and the notebooks' kernels (started by nbval) inherit it.
"""

from __future__ import annotations

import os
import tempfile

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if "SLICELIB_HOME" not in os.environ:
        os.environ["SLICELIB_HOME"] = tempfile.mkdtemp(prefix="slicelib-test-home-")
    os.environ.setdefault("MPLBACKEND", "Agg")


# What ``make test-fast`` (``pytest -m "not slow"``) leaves out: whole modules that build
# a book, start processes (torchrun, Orthanc) or install packages, tests that use a study
# or train twice to compare (by fixture or name), and every notebook check (nbval).
SLOW_MODULES = (
    "test_book", "test_distributed", "test_install", "test_verify", "test_fuzz", "test_orthanc",
)  # fmt: skip
SLOW_FIXTURES = ("smoke_study", "tiny_arm")
SLOW_NAMES = ("resumes_to_the_same_weights", "gives_the_same_weights")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if (
            item.path.suffix == ".ipynb"
            or item.path.stem in SLOW_MODULES
            or any(f in fixtures for f in SLOW_FIXTURES)
            or any(n in item.name for n in SLOW_NAMES)
        ):
            item.add_marker(pytest.mark.slow)
