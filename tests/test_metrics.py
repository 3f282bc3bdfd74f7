"""Metrics against scikit-image and known values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from slicelib import metrics
from slicelib.errors import SlicelibError


def _pair(shape: tuple[int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = gaussian_filter(rng.random(shape), 2.0)
    target = (target - target.min()) / (target.max() - target.min())
    pred = np.clip(target + 0.05 * rng.standard_normal(shape), 0.0, 1.0)
    return pred, target


@pytest.mark.parametrize("shape", [(32, 32), (33, 47), (64, 20)])
def test_psnr_matches_skimage(shape: tuple[int, int]) -> None:
    pred, target = _pair(shape)
    expected = peak_signal_noise_ratio(target, pred, data_range=1.0)
    assert metrics.psnr(pred, target, data_range=1.0) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("shape", [(32, 32), (33, 47), (64, 20)])
def test_ssim_uniform_matches_skimage_defaults(shape: tuple[int, int]) -> None:
    pred, target = _pair(shape, seed=1)
    expected = structural_similarity(target, pred, data_range=1.0)
    assert metrics.ssim(pred, target, data_range=1.0) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("shape", [(32, 32), (33, 47)])
def test_ssim_gaussian_matches_skimage_gaussian_protocol(shape: tuple[int, int]) -> None:
    pred, target = _pair(shape, seed=2)
    expected = structural_similarity(
        target,
        pred,
        data_range=1.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    got = metrics.ssim(pred, target, data_range=1.0, gaussian=True)
    assert got == pytest.approx(expected, abs=1e-6)
    # The two protocols are different numbers on the same pair.
    assert abs(got - metrics.ssim(pred, target, data_range=1.0)) > 1e-4


def test_psnr_known_value_and_data_range() -> None:
    target = np.zeros((16, 16))
    pred = np.full((16, 16), 0.1)  # MSE 0.01
    assert metrics.psnr(pred, target, data_range=1.0) == pytest.approx(20.0, abs=1e-9)
    # Doubling the data range adds 20 log10(2) dB.
    assert metrics.psnr(pred, target, data_range=2.0) == pytest.approx(
        20.0 + 20.0 * math.log10(2.0), abs=1e-9
    )


def test_identical_images_inf_psnr_and_unit_ssim() -> None:
    _, target = _pair((24, 24))
    assert metrics.psnr(target, target.copy(), data_range=1.0) == math.inf
    assert metrics.ssim(target, target.copy(), data_range=1.0) == pytest.approx(1.0, abs=1e-12)
    assert metrics.ssim(target, target, data_range=1.0, gaussian=True) == pytest.approx(1.0)
    assert metrics.mae(target, target) == 0.0


def test_mae_known_value() -> None:
    pred = np.array([[0.0, 1.0], [0.5, 0.25]])
    target = np.array([[0.5, 0.5], [0.5, 0.5]])
    assert metrics.mae(pred, target) == pytest.approx((0.5 + 0.5 + 0.0 + 0.25) / 4)


def test_float16_inputs_give_float64_results() -> None:
    pred, target = _pair((32, 32), seed=3)
    p16, t16 = pred.astype(np.float16), target.astype(np.float16)
    expected = peak_signal_noise_ratio(
        t16.astype(np.float64), p16.astype(np.float64), data_range=1.0
    )
    assert metrics.psnr(p16, t16, data_range=1.0) == pytest.approx(expected, abs=1e-6)


def test_clip01_arrays_and_tensors() -> None:
    x = np.array([-0.5, 0.3, 1.7])
    np.testing.assert_array_equal(metrics.clip01(x), [0.0, 0.3, 1.0])
    assert x[0] == -0.5  # a copy, not in place
    t = torch.tensor([-1.0, 0.5, 2.0])
    assert torch.equal(metrics.clip01(t), torch.tensor([0.0, 0.5, 1.0]))


def test_bad_inputs_raise_slicelib_error() -> None:
    a = np.zeros((16, 16))
    with pytest.raises(SlicelibError, match="same shape"):
        metrics.psnr(a, np.zeros((16, 15)), data_range=1.0)
    with pytest.raises(SlicelibError, match="data_range"):
        metrics.psnr(a, a + 0.1, data_range=0.0)
    with pytest.raises(SlicelibError, match="SSIM"):
        metrics.ssim(np.zeros((5, 5)), np.zeros((5, 5)), data_range=1.0)


def test_batched_helpers_clip_and_match_per_slice() -> None:
    rng = np.random.default_rng(4)
    target = torch.from_numpy(rng.random((3, 1, 20, 20))).float()
    pred = target + 0.3 * torch.from_numpy(rng.standard_normal((3, 1, 20, 20))).float()
    clipped = pred.clamp(0, 1).double().numpy()[:, 0]
    tgt = target.double().numpy()[:, 0]

    got_psnr = metrics.batch_psnr(pred, target, data_range=1.0)
    got_ssim = metrics.batch_ssim(pred, target, data_range=1.0, gaussian=True)
    got_mae = metrics.batch_mae(pred, target)
    rows = metrics.batch_metrics(pred, target, data_range=1.0)
    assert len(got_psnr) == len(got_ssim) == len(got_mae) == len(rows) == 3
    for i in range(3):
        assert got_psnr[i] == pytest.approx(
            peak_signal_noise_ratio(tgt[i], clipped[i], data_range=1.0), abs=1e-6
        )
        assert got_ssim[i] == pytest.approx(
            metrics.ssim(clipped[i], tgt[i], data_range=1.0, gaussian=True), abs=1e-12
        )
        assert got_mae[i] == pytest.approx(float(np.abs(clipped[i] - tgt[i]).mean()))
        assert rows[i].psnr == pytest.approx(got_psnr[i])
        assert rows[i].ssim == pytest.approx(
            structural_similarity(tgt[i], clipped[i], data_range=1)
        )
    # Without clipping the out-of-range predictions score worse.
    unclipped = metrics.batch_psnr(pred, target, data_range=1.0, clip=False)
    assert all(u < c for u, c in zip(unclipped, got_psnr))


def test_batched_helpers_reject_wrong_shapes() -> None:
    with pytest.raises(SlicelibError, match="N, 1, H, W"):
        metrics.batch_psnr(torch.zeros(2, 2, 8, 8), torch.zeros(2, 2, 8, 8), data_range=1.0)
