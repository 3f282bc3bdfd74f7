"""Classical baselines: exactness on polynomials in z, fallback, motion compensation."""

from __future__ import annotations

import numpy as np
import pytest

from slicelib import baselines
from slicelib.config import FlowConfig, FlowMethod
from slicelib.errors import SlicelibError
from slicelib.metrics import psnr


def _poly_volume(coeffs: list[float], slices: int = 16, size: int = 12) -> np.ndarray:
    """A volume (S, size, size) whose value at (z, y, x) is p(z) * a(y, x) + b(y, x)."""
    rng = np.random.default_rng(0)
    a = rng.random((size, size))
    b = rng.random((size, size))
    z = np.arange(slices, dtype=np.float64) / slices
    pz = np.polyval(coeffs, z)
    return pz[:, None, None] * a[None] + b[None]


@pytest.mark.parametrize("k", [1, 2])
def test_linear_exact_on_volume_linear_in_z(k: int) -> None:
    vol = _poly_volume([0.7, 0.1])
    for i in range(k, vol.shape[0] - k):
        nb = baselines.neighbours(vol, i, k)
        out = baselines.get_baseline("linear").predict(nb)
        np.testing.assert_allclose(out.prediction, vol[i], atol=1e-5)
        assert not out.fallback


def test_linear_not_exact_on_a_cubic() -> None:
    vol = _poly_volume([3.0, -2.0, 0.5, 0.1])
    nb = baselines.neighbours(vol, 8, 2)
    assert np.abs(baselines.linear(nb.before, nb.after) - vol[8]).max() > 1e-3


@pytest.mark.parametrize("k", [1, 2])
def test_cubic_exact_on_cubic_interior_and_falls_back_at_ends(k: int) -> None:
    vol = _poly_volume([3.0, -2.0, 0.5, 0.1], slices=20)
    n = vol.shape[0]
    method = baselines.get_baseline("cubic")
    fell_back = []
    for i in range(k, n - k):
        out = method.predict(baselines.neighbours(vol, i, k))
        if out.fallback:
            fell_back.append(i)
            np.testing.assert_allclose(out.prediction, 0.5 * (vol[i - k] + vol[i + k]), atol=1e-6)
        else:
            np.testing.assert_allclose(out.prediction, vol[i], atol=1e-4)
    expected = [i for i in range(k, n - k) if i - 3 * k < 0 or i + 3 * k > n - 1]
    assert fell_back == expected
    assert len(fell_back) == 4 * k


def test_cubic_weights_sum_to_one() -> None:
    assert sum(baselines.CUBIC_WEIGHTS) == pytest.approx(1.0)


def test_nearest_copies_previous_slice() -> None:
    vol = _poly_volume([1.0, 0.0])
    out = baselines.get_baseline("nearest").predict(baselines.neighbours(vol, 5, 2))
    np.testing.assert_array_equal(out.prediction, vol[3].astype(np.float32))


def _blob(size: int, col: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    c = size / 2
    img = np.exp(-((yy - c) ** 2 + (xx - col) ** 2) / (2 * 4.0**2))
    img += 0.6 * np.exp(-((yy - c + 6) ** 2 + (xx - col - 5) ** 2) / (2 * 2.5**2))
    return (img / img.max()).astype(np.float32)


@pytest.mark.parametrize("method", ["tvl1", "ilk"])
def test_flow_recovers_translation_better_than_linear(method: FlowMethod) -> None:
    size = 48
    target = _blob(size, size / 2)
    before = _blob(size, size / 2 + 2)  # the structure moves 2 px per slice step
    after = _blob(size, size / 2 - 2)
    pred = baselines.flow(before, after, FlowConfig(method=method))
    lin = baselines.linear(before, after)
    flow_db = psnr(np.clip(pred, 0, 1), target, data_range=1.0)
    lin_db = psnr(lin, target, data_range=1.0)
    assert flow_db > lin_db + 20.0
    assert flow_db > 50.0


def test_flow_sign_convention() -> None:
    before = _blob(40, 22)
    after = _blob(40, 18)
    f = baselines.optical_flow(before, after, FlowConfig(method="ilk"))
    # before(x) ~ after(x + f): the structure is 4 px further left in `after`.
    assert np.median(f[1][before > 0.3]) == pytest.approx(-4.0, abs=0.3)
    np.testing.assert_allclose(baselines.warp(after, f)[8:-8, 8:-8], before[8:-8, 8:-8], atol=0.05)


def test_neighbours_out_of_range_and_unknown_names() -> None:
    vol = np.zeros((6, 8, 8), np.float32)
    with pytest.raises(SlicelibError, match="no neighbours"):
        baselines.neighbours(vol, 1, 2)
    with pytest.raises(SlicelibError, match="unknown baseline 'spline'"):
        baselines.get_baseline("spline")
    with pytest.raises(SlicelibError, match="optical flow method"):
        baselines.optical_flow(vol[0], vol[1], FlowConfig(method="farneback"))  # type: ignore[arg-type]


def test_baselines_are_interpolators_on_two_neighbours() -> None:
    import torch

    from slicelib.baselines import BaselineInterpolator
    from slicelib.interpolator import Interpolator, SamplingInterpolator, with_std

    x = torch.rand(3, 2, 9, 7)
    interp = BaselineInterpolator("linear")
    assert isinstance(interp, Interpolator) and not isinstance(interp, SamplingInterpolator)
    mean, std = with_std(interp, x)
    assert std is None and mean.shape == (3, 1, 9, 7)
    assert torch.allclose(mean, x.mean(dim=1, keepdim=True), atol=1e-7)
    # Without the wider context the cubic baseline is linear interpolation.
    assert torch.equal(BaselineInterpolator("cubic")(x), mean)
    assert torch.equal(BaselineInterpolator("nearest")(x), x[:, :1])
