"""Image-quality metrics per 2-D slice: PSNR, SSIM (two protocols) and MAE.

All metrics are computed with scikit-image on float64 copies of the inputs, so
the numbers are exactly scikit-image's. ``data_range`` is required wherever it
enters the formula (MONAI's convention): there is no silent guess from the data.

Two SSIM protocols are in use for this task and they give different numbers:

- ``gaussian=False`` (the original study's test protocol): scikit-image
  defaults, a 7x7 uniform window with the sample covariance;
- ``gaussian=True`` (its validation protocol): an 11x11 Gaussian window with
  sigma 1.5 and the population covariance (Wang et al. 2004).

Identical images: :func:`psnr` returns ``math.inf`` (the mean squared error is
0), as scikit-image does, without a warning; :func:`ssim` returns 1.0. Callers
that average PSNR over slices therefore see ``inf`` if any slice is reproduced
exactly, which is the honest value rather than an arbitrary cap.

Predictions are clipped to [0, 1] by the caller with :func:`clip01` (the
batched torch helpers below do it for them by default).
"""

from __future__ import annotations

import math
from typing import NamedTuple, TypeVar, overload

import numpy as np
import torch
from skimage.metrics import mean_squared_error, structural_similarity

from slicelib.errors import SlicelibError

__all__ = [
    "SliceMetrics",
    "batch_mae",
    "batch_metrics",
    "batch_psnr",
    "batch_ssim",
    "clip01",
    "mae",
    "psnr",
    "slice_metrics",
    "ssim",
]

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

# The Gaussian protocol: sigma 1.5 truncated at 3.5 sigma gives an 11x11 window.
GAUSSIAN_SIGMA = 1.5


class SliceMetrics(NamedTuple):
    """All metrics of one slice (data range 1 after clipping in the evaluation)."""

    psnr: float  # dB; inf for an exact reproduction
    ssim: float  # 7x7 uniform window (scikit-image defaults)
    ssim_gauss: float  # 11x11 Gaussian window, sigma 1.5
    mae: float


@overload
def clip01(x: np.ndarray) -> np.ndarray: ...
@overload
def clip01(x: torch.Tensor) -> torch.Tensor: ...
def clip01(x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """A copy of ``x`` (array or tensor, any shape) with values clipped to [0, 1]."""
    if isinstance(x, torch.Tensor):
        return x.clamp(0.0, 1.0)
    return np.clip(x, 0.0, 1.0)


def _pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both slices as float64 2-D arrays of the same shape."""
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.ndim != 2 or p.shape != t.shape:
        raise SlicelibError(
            f"metrics need two 2-D slices of the same shape (got {p.shape} and {t.shape})"
        )
    return p, t


def _check_range(data_range: float) -> float:
    if not data_range > 0:
        raise SlicelibError(f"data_range must be > 0 (got {data_range})")
    return float(data_range)


def psnr(pred: np.ndarray, target: np.ndarray, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB of two slices (H, W).

    ``10 log10(data_range^2 / MSE)``, equal to scikit-image's
    ``peak_signal_noise_ratio``; ``math.inf`` when the slices are identical.
    """
    p, t = _pair(pred, target)
    rng = _check_range(data_range)
    err = float(mean_squared_error(t, p))
    if err == 0.0:
        return math.inf
    return float(10.0 * np.log10(rng**2 / err))


def ssim(pred: np.ndarray, target: np.ndarray, data_range: float, gaussian: bool = False) -> float:
    """Structural similarity of two slices (H, W), in [-1, 1] (1: identical).

    ``gaussian=False``: scikit-image defaults (7x7 uniform window, sample
    covariance). ``gaussian=True``: 11x11 Gaussian window, sigma 1.5, population
    covariance. Slices must be at least 7 (uniform) or 11 (Gaussian) pixels wide
    for the full window; smaller ones raise :class:`SlicelibError`.
    """
    p, t = _pair(pred, target)
    rng = _check_range(data_range)
    try:
        if gaussian:
            value = structural_similarity(
                t,
                p,
                data_range=rng,
                gaussian_weights=True,
                sigma=GAUSSIAN_SIGMA,
                use_sample_covariance=False,
            )
        else:
            value = structural_similarity(t, p, data_range=rng)
    except ValueError as exc:
        raise SlicelibError(f"SSIM of slices {p.shape}: {exc}") from None
    return float(value)


def mae(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute error of two slices (H, W), in the slices' units."""
    p, t = _pair(pred, target)
    return float(np.mean(np.abs(p - t)))


def slice_metrics(pred: np.ndarray, target: np.ndarray, data_range: float) -> SliceMetrics:
    """PSNR, both SSIMs and MAE of one slice pair (H, W); no clipping here."""
    return SliceMetrics(
        psnr=psnr(pred, target, data_range),
        ssim=ssim(pred, target, data_range, gaussian=False),
        ssim_gauss=ssim(pred, target, data_range, gaussian=True),
        mae=mae(pred, target),
    )


def _slices(pred: torch.Tensor, target: torch.Tensor, clip: bool) -> list[tuple[np.ndarray, ...]]:
    """Per-item float64 numpy slices of two (N, 1, H, W) tensors."""
    if pred.ndim != 4 or pred.shape[1] != 1 or pred.shape != target.shape:
        raise SlicelibError(
            "batched metrics need two tensors (N, 1, H, W) of the same shape "
            f"(got {tuple(pred.shape)} and {tuple(target.shape)})"
        )
    p = pred.detach().float()
    if clip:
        p = clip01(p)
    p_np = p.cpu().numpy().astype(np.float64)[:, 0]
    t_np = target.detach().float().cpu().numpy().astype(np.float64)[:, 0]
    return list(zip(p_np, t_np))


def batch_psnr(
    pred: torch.Tensor, target: torch.Tensor, data_range: float, *, clip: bool = True
) -> list[float]:
    """PSNR (dB) per item of tensors (N, 1, H, W); ``clip`` clips predictions to [0, 1]."""
    return [psnr(p, t, data_range) for p, t in _slices(pred, target, clip)]


def batch_ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float,
    gaussian: bool = False,
    *,
    clip: bool = True,
) -> list[float]:
    """SSIM per item of tensors (N, 1, H, W) under either protocol (see :func:`ssim`)."""
    return [ssim(p, t, data_range, gaussian=gaussian) for p, t in _slices(pred, target, clip)]


def batch_mae(pred: torch.Tensor, target: torch.Tensor, *, clip: bool = True) -> list[float]:
    """MAE per item of tensors (N, 1, H, W)."""
    return [mae(p, t) for p, t in _slices(pred, target, clip)]


def batch_metrics(
    pred: torch.Tensor, target: torch.Tensor, data_range: float, *, clip: bool = True
) -> list[SliceMetrics]:
    """All metrics per item of tensors (N, 1, H, W) (one :class:`SliceMetrics` each)."""
    return [slice_metrics(p, t, data_range) for p, t in _slices(pred, target, clip)]
