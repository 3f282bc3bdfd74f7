"""Headroom: how much any predictor of the two neighbours could gain over linear.

Two references tell "nothing to learn" from "not learned yet":

- :func:`fit_linear_filter`: the best linear filter of the two neighbours, a
  ``taps x taps`` kernel on each plus a bias, fitted by least squares on training
  slices and applied with :func:`apply_linear_filter` to held-out ones. Linear
  interpolation is one such filter (a centre tap of 0.5 on each), so on the
  training slices it can only do better; on held-out slices it shows what a
  shift-invariant linear predictor generalises to.
- :func:`oracle_blend`: a bound, not a predictor: the best convex combination
  ``w * before + (1 - w) * after`` with ``w`` in [0, 1] chosen per pixel (``block=1``)
  or per ``block x block`` tile *knowing the target*. No method that blends the two
  neighbours with weights (flow-free interpolation) can beat it.

Arrays are float stacks ``(N, H, W)`` with intensities in [0, 1]. A fitted filter is an
interpolator and an oracle blend a bound (:class:`OracleBlend`), both scored by
:func:`slicelib.evaluate.evaluate` as any method is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from slicelib.errors import SlicelibError

log = logging.getLogger(__name__)

DEFAULT_TAPS = 9  # kernel size on each neighbour: 2 * 81 weights and a bias
# Each training slice contributes this many randomly chosen pixels to the normal
# equations: 162 unknowns are fixed well by far fewer rows than a cohort holds.
DEFAULT_PIXELS_PER_SLICE = 2048


@dataclass(frozen=True)
class LinearFilter:
    """``weights``: (2, taps, taps) kernels on (before, after); ``bias``: added constant.

    Called on a tensor (N, 2, H, W) of neighbours in [0, 1], it is an
    :class:`~slicelib.interpolator.Interpolator`: the filtered slices (N, 1, H, W)
    clipped to [0, 1]."""

    weights: np.ndarray
    bias: float

    @property
    def taps(self) -> int:
        return int(self.weights.shape[-1])

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs.detach().float().cpu().numpy()
        out = apply_linear_filter(self, x[:, 0], x[:, 1])
        return torch.from_numpy(np.clip(out, 0.0, 1.0)[:, None]).to(inputs.device)


@dataclass(frozen=True)
class OracleBlend:
    """:func:`oracle_blend` per ``block x block`` tile as a bound the evaluation scores:
    ``bound(inputs (N, 2, H, W), targets (N, H, W))`` -> (N, H, W). Not a predictor: it
    reads the target."""

    block: int = 1

    def bound(self, inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        return oracle_blend(inputs[:, 0], inputs[:, 1], targets, block=self.block)


def _check_stacks(*arrays: np.ndarray) -> None:
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise SlicelibError(f"headroom: stacks differ in shape ({sorted(shapes)})")
    shape = next(iter(shapes))
    if len(shape) != 3 or min(shape) < 1:
        raise SlicelibError(f"headroom: expected stacks (N, H, W), got shape {shape}")


def _padded(before: np.ndarray, after: np.ndarray, taps: int) -> np.ndarray:
    """(N, 2, H + taps - 1, W + taps - 1) float64, reflect-padded (as torch pads)."""
    x = np.stack([before, after], axis=1).astype(np.float64)
    pad = taps // 2
    return np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect")


def fit_linear_filter(
    before: np.ndarray,
    after: np.ndarray,
    target: np.ndarray,
    taps: int = DEFAULT_TAPS,
    pixels_per_slice: int | None = DEFAULT_PIXELS_PER_SLICE,
    seed: int = 0,
    chunk: int = 16,
) -> LinearFilter:
    """Least-squares ``taps x taps`` filter on each neighbour plus a bias.

    ``before``, ``after``, ``target``: (N, H, W) training slices. ``pixels_per_slice``:
    rows drawn per slice (seeded; None: every pixel). The normal equations are summed
    over chunks of ``chunk`` slices, so memory stays small for any N.
    """
    _check_stacks(before, after, target)
    if taps < 1 or taps % 2 == 0:
        raise SlicelibError(f"headroom: taps must be odd and >= 1 (got {taps})")
    h, w = before.shape[1:]
    if taps // 2 >= min(h, w):
        raise SlicelibError(f"headroom: {taps} taps need slices larger than {h}x{w}")
    n_feat = 2 * taps * taps + 1
    xtx = torch.zeros(n_feat, n_feat, dtype=torch.float64)
    xty = torch.zeros(n_feat, dtype=torch.float64)
    rng = np.random.default_rng(seed)
    for start in range(0, len(before), chunk):
        sl = slice(start, start + chunk)
        windows = np.lib.stride_tricks.sliding_window_view(
            _padded(before[sl], after[sl], taps), (taps, taps), axis=(2, 3)
        )  # (n, 2, H, W, taps, taps), a view
        n = windows.shape[0]
        if pixels_per_slice is not None and pixels_per_slice < h * w:
            flat = np.stack([rng.choice(h * w, pixels_per_slice, replace=False) for _ in range(n)])
        else:
            flat = np.broadcast_to(np.arange(h * w), (n, h * w))
        rr, cc = np.divmod(flat, w)
        picked = windows[np.arange(n)[:, None], :, rr, cc]  # (n, P, 2, taps, taps)
        rows = torch.from_numpy(picked.reshape(-1, n_feat - 1))
        rows = torch.cat([rows, torch.ones(len(rows), 1, dtype=torch.float64)], dim=1)
        y = torch.from_numpy(target[sl].astype(np.float64)[np.arange(n)[:, None], rr, cc])
        xtx += rows.T @ rows
        xty += rows.T @ y.reshape(-1)
    # lstsq rather than solve: a flat region can leave the system rank-deficient.
    solution = torch.linalg.lstsq(xtx, xty[:, None], driver="gelsd").solution[:, 0]
    weights = solution[:-1].reshape(2, taps, taps).numpy()
    return LinearFilter(weights=weights, bias=float(solution[-1]))


def apply_linear_filter(
    filt: LinearFilter, before: np.ndarray, after: np.ndarray, chunk: int = 16
) -> np.ndarray:
    """(N, H, W) float32 prediction of ``filt`` (reflect padding, not clipped).

    Slices go through in chunks of ``chunk``: a float64 convolution unfolds its input."""
    _check_stacks(before, after)
    # conv2d is a correlation, as the windows of the fit are.
    kernel = torch.from_numpy(filt.weights[None].astype(np.float64))
    out = np.empty(before.shape, dtype=np.float32)
    for start in range(0, len(before), chunk):
        sl = slice(start, start + chunk)
        x = torch.from_numpy(_padded(before[sl], after[sl], filt.taps))
        out[sl] = (F.conv2d(x, kernel)[:, 0] + filt.bias).numpy()
    return out


def oracle_blend(
    before: np.ndarray, after: np.ndarray, target: np.ndarray, block: int = 1
) -> np.ndarray:
    """(N, H, W) best convex blend of the neighbours, its weight chosen knowing ``target``.

    ``block=1``: per pixel, i.e. the target clipped to [min, max] of the two
    neighbours. ``block > 1``: one least-squares weight in [0, 1] per
    ``block x block`` tile (edge tiles smaller).
    """
    _check_stacks(before, after, target)
    if block < 1:
        raise SlicelibError(f"headroom: block must be >= 1 (got {block})")
    a, b, t = (x.astype(np.float64) for x in (before, after, target))
    if block == 1:
        return np.clip(t, np.minimum(a, b), np.maximum(a, b)).astype(np.float32)
    n, h, w = a.shape
    out = np.empty_like(a)
    for top in range(0, h, block):
        for left in range(0, w, block):
            tile = np.s_[:, top : top + block, left : left + block]
            d = (a[tile] - b[tile]).reshape(n, -1)
            r = (t[tile] - b[tile]).reshape(n, -1)
            den = (d * d).sum(axis=1)
            wgt = np.where(den > 0, (d * r).sum(axis=1) / np.where(den > 0, den, 1.0), 0.5)
            wgt = np.clip(wgt, 0.0, 1.0)[:, None, None]
            out[tile] = wgt * a[tile] + (1.0 - wgt) * b[tile]
    return out.astype(np.float32)
