"""Session fixtures: small cohorts and caches built once per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from slicelib.config import SMOKE, PrepareConfig


@pytest.fixture(scope="session")
def smoke_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic DICOM cohort (TCIA layout) written with the smoke preset's settings."""
    from slicelib.data.synthetic import write_demo_cohort

    root = tmp_path_factory.mktemp("smoke_cohort")
    write_demo_cohort(root, SMOKE.cohort)
    return root


@pytest.fixture(scope="session")
def smoke_cache(smoke_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke cohort prepared into a cache with the smoke PrepareConfig."""
    from slicelib.data.prepare import prepare

    cache_dir = tmp_path_factory.mktemp("smoke_cache_parent") / "cache"
    prepare(smoke_cohort, cache_dir, SMOKE.prepare, SMOKE.scan)
    return cache_dir


def smooth_volume(rng: np.random.Generator, slices: int, size: int) -> np.ndarray:
    """A volume (S, size, size) in [0, 1] that varies smoothly in z and in-plane."""
    from scipy.ndimage import gaussian_filter

    noise = rng.standard_normal((slices, size, size))
    vol = gaussian_filter(noise, sigma=(2.0, 3.0, 3.0))
    vol -= vol.min()
    return (vol / vol.max()).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache of 5 patients x 20 slices x 32x32 written directly, without DICOM."""
    from slicelib.data.cache import write_cache

    rng = np.random.default_rng(0)
    ids = [f"TINY-{i:03d}" for i in range(5)]
    volumes = {pid: smooth_volume(rng, 20, 32) for pid in ids}
    splits = dict(zip(ids, ["train", "train", "train", "val", "test"], strict=True))
    cache_dir = tmp_path_factory.mktemp("tiny_cache_parent") / "cache"
    write_cache(cache_dir, volumes, splits, PrepareConfig(size=32))
    return cache_dir


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real Orthanc with its DICOMweb plugin on 127.0.0.1, authentication on
    (tests/orthanc_server.py); the tests that use it skip, saying why, where Orthanc is
    not installed."""
    from orthanc_server import SKIP_REASON, available, running_orthanc

    if not available():
        pytest.skip(SKIP_REASON)
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


@pytest.fixture(scope="module")
def run(tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder of a one-step U-Net of 4 features trained on ``tiny_cache``."""
    from test_upsample import _train

    return _train(tiny_cache, tmp_path_factory.mktemp("run") / "plain")


@pytest.fixture
def series(tmp_path: Path) -> Path:
    """A folder holding a 4-slice DICOM series of 20 x 24 pixels."""
    from test_dicom_writer import write_test_series

    folder = tmp_path / "patient" / "t2"
    write_test_series(folder, slices=4, rows=20, cols=24)
    return folder


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a module: tiny convolutions gain nothing from more threads,
    and on a shared 2-core machine two threads can be several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _slicelib_loggers_enabled() -> None:
    """A library configured with ``logging.config.dictConfig`` in an earlier test (the book
    build) disables every logger that already exists; tests that read the log need ours."""
    import logging

    for name, logger in logging.root.manager.loggerDict.items():
        if name.startswith("slicelib") and isinstance(logger, logging.Logger):
            logger.disabled = False
