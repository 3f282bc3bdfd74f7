"""Whole-volume x2 through-plane upsampling: a predicted slice between every acquired pair.

From ``n`` acquired slices :func:`upsample_volume` builds ``2n - 1``: slice ``2i`` is
acquired slice ``i`` (its values untouched), slice ``2i + 1`` is predicted from the
acquired slices ``i`` and ``i + 1`` and lies half-way between them along the slice
normal.

The model sees what it saw in training: the volume is min-max normalised to
[0, 1] per volume and every slice is centre-cropped to a square and resized to
the training size with the same functions that built the cache
(:mod:`slicelib.data.preprocess`). Its output is resized back to the crop, put back
in the frame and mapped back to the original intensity units. For a non-square
slice the model never saw the strips outside the centre square; there the new
slice is the linear interpolation (mean) of its two neighbours.

A model trained with ``k`` predicts the middle of two slices ``2k`` acquired
spacings apart; here its two inputs are one acquired spacing apart. A ``k = 1``
model trained on 1.5 mm slices therefore learned to fill a 3 mm gap: applied to a
3 mm series it does what it learned (3 mm -> 1.5 mm); applied to a 1.5 mm series
(the study's 1.5 mm -> 0.75 mm setting) it fills a gap half as wide as the one it
learned, which ``slicelib upsample`` reports as outside the training domain
(:func:`slicelib.model_card.domain_differences`).

Every predicted slice is compared with the two acquired slices it lies between
(:data:`~slicelib.config.NEIGHBOUR_RANGE_TOL`): a prediction far outside what they
span (a saturated or collapsed slice, e.g. from a damaged checkpoint, which clipping
would turn into plausible-looking data) is listed in
:attr:`Upsampled.outside_neighbours`, which ``slicelib upsample`` reports in one
warning line (:func:`outside_neighbours_message`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from slicelib.baselines import BaselineInterpolator, Neighbours
from slicelib.config import FACTOR, NEIGHBOUR_RANGE_TOL
from slicelib.data.dicom import Volume, normal
from slicelib.data.preprocess import normalise, resize_slices, square_crop
from slicelib.errors import SlicelibError
from slicelib.interpolator import Interpolator, predict_std

log = logging.getLogger(__name__)

SPACING_REL_TOL = 0.05  # same tolerance as the series scan (ScanConfig.spacing_rel_tol)


@dataclass(frozen=True)
class Upsampled:
    """A volume on the x2 grid and where each of its slices came from.

    ``pixels``: float32 (2n-1, H, W) in the source's units; ``pixels[2i]`` is
    ``source.pixels[i]`` exactly. ``positions``: (2n-1, 3) mm, ImagePositionPatient
    of each slice. ``acquired``: (2n-1,) bool. ``std``: float32 (2n-1, H, W), the
    predicted standard deviation in the source's units (0 on acquired slices), or
    None. ``method``: a short name of what predicted the new slices.
    ``outside_neighbours``: (i, excess) for each predicted slice between acquired
    slices ``i`` and ``i + 1`` (0-based) that leaves what they span by more than
    :data:`NEIGHBOUR_RANGE_TOL` (excess: a fraction of the series' intensity range).
    """

    source: Volume
    pixels: np.ndarray
    positions: np.ndarray
    acquired: np.ndarray
    std: np.ndarray | None
    method: str
    outside_neighbours: tuple[tuple[int, float], ...] = ()

    @property
    def n_slices(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def slice_spacing(self) -> float:
        return self.source.slice_spacing / FACTOR

    def sources(self, j: int) -> tuple[int, ...]:
        """Indices of the acquired slice(s) that slice ``j`` comes from (1 or 2)."""
        return (j // 2,) if j % 2 == 0 else (j // 2, j // 2 + 1)

    def volume(self) -> Volume:
        """The upsampled slices as a :class:`Volume` (no files: not written yet)."""
        return dataclasses.replace(
            self.source,
            pixels=self.pixels,
            positions=self.positions,
            slice_spacing=self.slice_spacing,
            files=[],
        )

    def std_volume(self) -> Volume:
        """The standard-deviation map as a :class:`Volume`; raises if none was computed."""
        if self.std is None:
            raise SlicelibError("no uncertainty was computed for this volume")
        return dataclasses.replace(self.volume(), pixels=self.std)


def interleaved_positions(positions: np.ndarray) -> np.ndarray:
    """(n, 3) slice positions -> (2n-1, 3): the originals with the midpoints between them."""
    positions = np.asarray(positions, dtype=np.float64)
    out = np.empty((2 * len(positions) - 1, 3), dtype=np.float64)
    out[0::2] = positions
    out[1::2] = 0.5 * (positions[:-1] + positions[1:])
    return out


def interleave(acquired: np.ndarray, synthesized: np.ndarray) -> np.ndarray:
    """(n, H, W) and (n-1, H, W) -> (2n-1, H, W), acquired at even indices."""
    out = np.empty((2 * len(acquired) - 1, *acquired.shape[1:]), dtype=np.float32)
    out[0::2] = acquired
    out[1::2] = synthesized
    return out


def check_upsamplable(volume: Volume, where: str, rel_tol: float = SPACING_REL_TOL) -> None:
    """Raise :class:`SlicelibError` unless ``volume`` has >= 2 uniformly spaced slices."""
    if volume.n_slices < 2:
        raise SlicelibError(
            f"{where}: {volume.n_slices} slice(s); through-plane upsampling needs at least 2"
        )
    along = np.asarray(volume.positions, dtype=np.float64) @ normal(volume.orientation)
    gaps = np.diff(along)
    if np.any(gaps <= 0):
        raise SlicelibError(f"{where}: slices are not sorted along the slice normal")
    median = float(np.median(gaps))
    if float(np.max(np.abs(gaps - median))) > rel_tol * median:
        raise SlicelibError(
            f"{where}: non-uniform slice spacing ({gaps.min():.2f}-{gaps.max():.2f} mm)"
        )


def check_factor(factor: int) -> None:
    if factor != FACTOR:
        raise SlicelibError(
            f"--factor {factor} is not supported: only x{FACTOR} (one new slice between "
            "each acquired pair) matches how the models were trained"
        )


def intensity_range(
    pixels: np.ndarray, clip_percentiles: tuple[float, float] | None
) -> tuple[float, float]:
    """The (low, high) original values that :func:`normalise` maps to 0 and 1."""
    if clip_percentiles is not None:
        low, high = np.percentile(pixels, clip_percentiles)
        return float(low), float(high)
    return float(np.min(pixels)), float(np.max(pixels))


def crop_box(
    shape: tuple[int, int], pixel_spacing: tuple[float, float]
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the centre square that :func:`square_crop` keeps."""
    rows, cols = np.indices(shape)
    kept, _ = square_crop(np.stack([rows, cols]), pixel_spacing)
    return int(kept[0, 0, 0]), int(kept[1, 0, 0]), int(kept.shape[1]), int(kept.shape[2])


def _to_model(slices: np.ndarray, size: int) -> torch.Tensor:
    """(N, h, w) in [0, 1] -> tensor (N, size, size), resized as the cache was."""
    return torch.from_numpy(np.clip(resize_slices(slices, size), 0.0, 1.0))


def _from_model(pred: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """(N, 1, s, s) -> float32 (N, h, w): bilinear, antialiased when shrinking."""
    pred = pred.detach().float().cpu()
    if tuple(pred.shape[-2:]) != shape:
        shrink = shape[0] < pred.shape[-2] or shape[1] < pred.shape[-1]
        pred = F.interpolate(
            pred, size=shape, mode="bilinear", align_corners=False, antialias=shrink
        )
    return pred[:, 0].numpy().astype(np.float32, copy=False)


def _check_finite(values: np.ndarray, what: str, start: int, stop: int) -> None:
    """Refuse NaN or infinite predictions: clipping would turn them into black or
    white slices that look like data."""
    if not np.all(np.isfinite(values)):
        raise SlicelibError(
            f"{what} between acquired slices {start + 1}-{stop + 1} holds NaN or infinite "
            "values; nothing written (is the checkpoint damaged?)"
        )


def neighbour_excess(pred: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """(N,) how far each predicted slice of ``pred`` (N, h, w), before clipping, leaves
    what its neighbours ``lower`` and ``upper`` (N, h, w) span, all in the normalised
    units of the series (0 when inside): the largest of how far its mean lies outside
    their two means and how far its 1st and 99th percentiles lie outside their lowest
    and highest values."""
    axes = (1, 2)
    low = np.minimum(lower.min(axis=axes), upper.min(axis=axes))
    high = np.maximum(lower.max(axis=axes), upper.max(axis=axes))
    means = np.stack([lower.mean(axis=axes), upper.mean(axis=axes)])
    p1, p99 = np.percentile(pred, [1.0, 99.0], axis=axes)
    mean = pred.mean(axis=axes)
    gaps = [low - p1, p99 - high, means.min(axis=0) - mean, mean - means.max(axis=0)]
    return np.maximum(np.max(np.stack(gaps), axis=0), 0.0)


def outside_neighbours_message(where: str, up: Upsampled) -> str:
    """The one-line warning for the predicted slices of ``up`` that leave the range of
    their neighbours (:attr:`Upsampled.outside_neighbours`, not empty)."""
    worst, excess = max(up.outside_neighbours, key=lambda item: item[1])
    return (
        f"{where}: {len(up.outside_neighbours)} of {up.source.n_slices - 1} predicted slices "
        f"leave the range of their two neighbours by more than "
        f"{NEIGHBOUR_RANGE_TOL * 100:.0f} % of the series' intensity range (worst: between "
        f"acquired slices {worst + 1}-{worst + 2}, by {excess * 100:.0f} %); the checkpoint "
        "may be damaged or unsuited to this series"
    )


def classical_slices(norm: np.ndarray, method: BaselineInterpolator) -> np.ndarray:
    """The slices (n - 1, H, W) a classical method puts between the n acquired slices of
    ``norm`` (values in [0, 1]), at the full matrix: each from its two neighbours, the cubic
    method also from the next acquired slice on either side where there is one."""
    n = len(norm)
    out = [
        method.predict(
            Neighbours(
                before=norm[j], after=norm[j + 1],
                far_before=norm[j - 1] if j >= 1 else None,
                far_after=norm[j + 2] if j + 2 < n else None,
            )
        ).prediction
        for j in range(n - 1)
    ]  # fmt: skip
    return np.stack(out).astype(np.float32)


def upsample_volume(
    volume: Volume,
    predict: Interpolator,
    image_size: int,
    *,
    uncertainty: Interpolator | None = None,
    method: str = "model",
    batch_size: int = 8,
    clip_percentiles: tuple[float, float] | None = None,
    progress: bool = False,
    where: str | None = None,
) -> Upsampled:
    """Insert a predicted slice between every pair of acquired slices.

    ``volume``: n >= 2 slices (H, W) at uniform spacing. ``predict``: the model at
    its training size ``image_size``, (N, 2, s, s) in [0, 1] -> (N, 1, s, s) in
    [0, 1]; a classical method (:class:`~slicelib.baselines.BaselineInterpolator`) works
    at the full matrix instead (``image_size`` unused), see :func:`classical_slices`.
    ``uncertainty``: optional, an interpolator that draws samples; their std, scaled
    to the volume's units, becomes :attr:`Upsampled.std`. ``clip_percentiles``:
    the cache's normalisation (None: plain min-max, the default of
    :class:`~slicelib.config.PrepareConfig`).
    """
    where = where or f"series {volume.series_uid}"
    check_upsamplable(volume, where)
    src = np.asarray(volume.pixels, dtype=np.float32)
    n, height, width = src.shape
    try:
        norm = normalise(src, clip_percentiles)
    except SlicelibError as exc:
        raise SlicelibError(f"{where}: {exc}") from None
    lo, hi = intensity_range(src, clip_percentiles)
    scale = hi - lo
    top, left, ch, cw = crop_box((height, width), volume.pixel_spacing)
    box = (slice(None), slice(top, top + ch), slice(left, left + cw))

    # Outside the centre square (and as the starting frame) the new slice is linear.
    synth = 0.5 * (src[:-1] + src[1:])
    std = np.zeros_like(synth) if uncertainty is not None else None
    flagged: list[tuple[int, float]] = []
    classical = isinstance(predict, BaselineInterpolator)
    if isinstance(predict, BaselineInterpolator):  # the whole matrix, without resampling
        synth = np.clip(classical_slices(norm, predict), 0.0, 1.0) * np.float32(scale)
        synth += np.float32(lo)
    starts = range(0, n - 1, batch_size) if not classical else range(0)
    for start in tqdm(starts, desc="upsample", unit="batch", disable=not progress):
        stop = min(start + batch_size, n - 1)
        lower = _to_model(norm[start:stop][box], image_size)
        upper = _to_model(norm[start + 1 : stop + 1][box], image_size)
        inputs = torch.stack([lower, upper], dim=1)
        with torch.inference_mode():  # no autograd records at all (predictions only)
            raw = _from_model(predict(inputs), (ch, cw))
            _check_finite(raw, f"{where}: the model's prediction", start, stop)
            excess = neighbour_excess(raw, norm[start:stop][box], norm[start + 1 : stop + 1][box])
            flagged += [
                (start + i, float(e)) for i, e in enumerate(excess) if e > NEIGHBOUR_RANGE_TOL
            ]
            synth[start:stop][box] = np.clip(raw, 0.0, 1.0) * np.float32(scale) + np.float32(lo)
            if uncertainty is not None and std is not None:
                spread = _from_model(predict_std(uncertainty, inputs), (ch, cw))
                _check_finite(spread, f"{where}: the predicted std", start, stop)
                std[start:stop][box] = np.maximum(spread, 0.0) * np.float32(scale)

    pixels = interleave(src, synth)
    std_units = None if std is None else interleave(np.zeros_like(src), std)
    acquired = np.zeros(2 * n - 1, dtype=bool)
    acquired[0::2] = True
    log.info("%s: %d -> %d slices (%s)", where, n, 2 * n - 1, method)
    return Upsampled(
        source=volume,
        pixels=pixels,
        positions=interleaved_positions(volume.positions),
        acquired=acquired,
        std=std_units,
        method=method,
        outside_neighbours=tuple(flagged),
    )


# Multiplanar views: what upsampling does to sagittal and coronal reformats --------------


def cache_volume(cache: Any, patient_id: str) -> Volume:
    """One cached volume (values in [0, 1], square slices) as an axial :class:`Volume`
    with the slice spacing recorded in the cache."""
    entry = cache.entry(patient_id)
    pixels = np.asarray(cache.volume(patient_id), dtype=np.float32)
    pixel_mm = float(entry.pixel_mm) if entry.pixel_mm else 1.0
    positions = np.zeros((pixels.shape[0], 3))
    positions[:, 2] = np.arange(pixels.shape[0]) * float(entry.spacing_mm)
    return Volume(
        pixels=pixels,
        positions=positions,
        orientation=np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
        pixel_spacing=(pixel_mm, pixel_mm),
        slice_spacing=float(entry.spacing_mm),
        slice_thickness=None,
        patient_id=patient_id,
        series_uid=str(entry.series_uid),
    )


def decimate(volume: Volume, factor: int = FACTOR) -> Volume:
    """Every ``factor``-th slice of ``volume`` from the first: an acquisition at
    ``factor`` times the spacing, whose x2 upsampling lands on the original grid."""
    keep = slice(0, None, factor)
    return dataclasses.replace(
        volume,
        pixels=volume.pixels[keep],
        positions=volume.positions[keep],
        slice_spacing=volume.slice_spacing * factor,
        files=volume.files[keep] if volume.files else [],
    )


def reformat(pixels: np.ndarray, plane: str, index: int | None = None) -> np.ndarray:
    """A sagittal or coronal reformat of (S, H, W): (S, H) at column ``index`` or (S, W)
    at row ``index`` (default: the centre), slice 0 at the top."""
    if plane == "sagittal":
        return pixels[:, :, pixels.shape[2] // 2 if index is None else index]
    if plane == "coronal":
        return pixels[:, pixels.shape[1] // 2 if index is None else index, :]
    raise SlicelibError(f"unknown plane {plane!r} (sagittal or coronal)")


def synthesized_scores(up: Upsampled, truth: np.ndarray, data_range: float) -> dict[str, float]:
    """PSNR and SSIM (mean over the synthesized slices) against ``truth`` (2n-1, H, W)."""
    from slicelib.metrics import psnr, ssim

    if truth.shape != up.pixels.shape:
        raise SlicelibError(f"truth {truth.shape} and upsampled {up.pixels.shape} differ")
    pred = np.clip(up.pixels[1::2], 0.0, data_range)
    target = truth[1::2]
    return {
        "psnr": float(np.mean([psnr(p, t, data_range) for p, t in zip(pred, target)])),
        "ssim": float(np.mean([ssim(p, t, data_range) for p, t in zip(pred, target)])),
    }
