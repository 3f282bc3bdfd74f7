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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark as slow what runs the smoke study or executes a notebook (nbval), so that
    ``make test-fast`` (``pytest -m "not slow"``) leaves them out."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "smoke_study" in fixtures or item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)
