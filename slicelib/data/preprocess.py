"""Per-volume intensity normalisation and in-plane resizing (supplement 1.2).

``normalise``: optional percentile clipping (the original code's 1st-99th), then
min-max to [0, 1] over the whole volume; a volume whose normalisation fails
(non-finite values, constant, or a few extreme voxels that squeeze the rest
into a sliver of the range) is refused with the reason.
``square_crop`` + ``resize_slices``: centre-crop every slice to a square of
equal physical extent, then bilinear resize with antialiasing.
"""

from __future__ import annotations

import numpy as np
from skimage.transform import resize

from slicelib.errors import SlicelibError


def normalise(
    pixels: np.ndarray,
    clip_percentiles: tuple[float, float] | None = None,
    min_p99: float = 0.0,
) -> np.ndarray:
    """Min-max scale a volume (S, H, W) to float32 values in [0, 1].

    ``clip_percentiles=(lo, hi)`` first clips to those percentiles of the volume.
    Raises :class:`SlicelibError` when values are non-finite, the volume is
    constant, or after scaling its 99th percentile is below ``min_p99`` (an
    extreme artefact dominates the range).
    """
    vol = np.asarray(pixels, dtype=np.float32)
    n_bad = int(vol.size - np.count_nonzero(np.isfinite(vol)))
    if n_bad:
        raise SlicelibError(f"normalisation failed: {n_bad} non-finite voxel(s)")
    if clip_percentiles is not None:
        lo, hi = (float(v) for v in np.percentile(vol, clip_percentiles))
        vol = np.clip(vol, np.float32(lo), np.float32(hi))
    vmin, vmax = float(vol.min()), float(vol.max())
    if not vmax - vmin > 1e-6 * max(1.0, abs(vmax)):
        raise SlicelibError(f"normalisation failed: constant volume (value {vmin:g})")
    out = (vol - np.float32(vmin)) * np.float32(1.0 / (vmax - vmin))
    np.clip(out, 0.0, 1.0, out=out)
    if min_p99 > 0:
        p99 = float(np.percentile(out, 99))
        if p99 < min_p99:
            raise SlicelibError(
                f"normalisation failed: extreme intensity artefact (99th percentile at "
                f"{100 * p99:.1f}% of the range)"
            )
    return out


def square_crop(pixels: np.ndarray, pixel_spacing: tuple[float, float]) -> tuple[np.ndarray, float]:
    """Centre-crop (S, H, W) to the largest square of equal physical extent.

    Returns the cropped array (a view) and the side of the square in mm.
    ``pixel_spacing`` is (row, col) mm.
    """
    _, h, w = pixels.shape
    dr, dc = pixel_spacing
    side_mm = min(h * dr, w * dc)
    ch = min(h, max(1, round(side_mm / dr)))
    cw = min(w, max(1, round(side_mm / dc)))
    top, left = (h - ch) // 2, (w - cw) // 2
    return pixels[:, top : top + ch, left : left + cw], side_mm


def resize_slices(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize every slice of (S, h, w) to float32 (S, size, size): bilinear, antialiased."""
    out = np.empty((pixels.shape[0], size, size), dtype=np.float32)
    for s in range(pixels.shape[0]):
        out[s] = resize(pixels[s], (size, size), order=1, anti_aliasing=True, preserve_range=True)
    return out


def preprocess_volume(
    pixels: np.ndarray,
    pixel_spacing: tuple[float, float],
    size: int,
    clip_percentiles: tuple[float, float] | None = None,
    min_p99: float = 0.0,
) -> tuple[np.ndarray, float]:
    """Normalise, square-crop and resize: float32 (S, size, size) in [0, 1], and mm per pixel."""
    norm = normalise(pixels, clip_percentiles, min_p99)
    cropped, side_mm = square_crop(norm, pixel_spacing)
    out = resize_slices(cropped, size)
    np.clip(out, 0.0, 1.0, out=out)
    return out, side_mm / size
