"""Write an upsampled NIfTI volume: same header and voxel layout, twice the slices.

The output keeps the source's voxel axes, data type and scaling
(``scl_slope``/``scl_inter``). Along the slice axis ``a`` (chosen as the loader
chose it, :func:`slicelib.data.nifti.slice_axis`; the third axis in most files),
slice ``2k`` holds the source's stored values of slice ``k`` unchanged, and slice
``2k + 1`` the synthesized slice encoded with the same scaling. The affine's
column ``a`` (the step between slices) is halved and its origin kept, so slice
``2k`` lies exactly where the source's slice ``k`` did.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np

from slicelib.config import FACTOR
from slicelib.data.nifti import RAS_TO_LPS, slice_axis
from slicelib.errors import SlicelibError
from slicelib.io import atomic_write
from slicelib.upsample.dicom_writer import check_output_location
from slicelib.upsample.volume import Upsampled

log = logging.getLogger(__name__)


def upsampled_affine(affine: np.ndarray, axis: int = 2) -> np.ndarray:
    """The (4, 4) affine of the x2 grid: the step along voxel ``axis`` halved, origin
    unchanged."""
    out = np.array(affine, dtype=np.float64, copy=True)
    out[:3, axis] /= FACTOR
    return out


def _encode(values: np.ndarray, dtype: np.dtype, slope: float, inter: float) -> np.ndarray:
    """Values in the source's units -> stored values of ``dtype`` under slope/inter."""
    stored = (values.astype(np.float64) - inter) / slope
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        stored = np.clip(np.rint(stored), info.min, info.max)
    return stored.astype(dtype)


def write_nifti(
    up: Upsampled,
    source: str | Path,
    out: str | Path,
    *,
    kind: Literal["image", "std"] = "image",
    force: bool = False,
    axis: int | None = None,
) -> Path:
    """Write ``up`` (or its std map, ``kind="std"``) as a NIfTI file like ``source``.

    ``source``: the NIfTI file ``up.source`` was loaded from (its header, affine
    and stored values are reused). ``out``: a ``.nii`` or ``.nii.gz`` file, written
    atomically; refused if it exists unless ``force``. ``axis``: the slice axis
    given to the loader (None: from the header, as the loader does). The std map is
    written as float32 without scaling.
    """
    source, out = Path(source), Path(out)
    check_output_location(out, [source])
    if out.exists() and not force:
        raise SlicelibError(f"output {out} already exists (use --force to overwrite)")
    if kind == "std" and up.std is None:
        raise SlicelibError("no uncertainty was computed: cannot write the std map")
    img: Any = nib.load(source)
    proxy = img.dataobj
    raw = np.asarray(proxy.get_unscaled())
    while raw.ndim > 3 and raw.shape[-1] == 1:
        raw = raw[..., 0]
    n = up.source.n_slices
    axis = slice_axis(source, axis).axis
    if raw.ndim != 3 or raw.shape[axis] != n:
        raise SlicelibError(f"NIfTI file {source}: does not hold the {n}-slice source volume")
    raw = np.moveaxis(raw, axis, 2)  # (n_i, n_j, n): the loader's layout
    # The loader sorts slices along the normal; undo that to keep the file's voxel order.
    origin = RAS_TO_LPS @ np.asarray(img.affine, dtype=np.float64)[:3, 3]
    reverse = not np.allclose(up.source.positions[0], origin, atol=1e-3)
    values = up.std if kind == "std" else up.pixels
    assert values is not None
    ordered = values[::-1] if reverse else values
    acquired = up.acquired[::-1] if reverse else up.acquired

    header = img.header.copy()
    if kind == "std":
        data = np.transpose(ordered, (2, 1, 0)).astype(np.float32)
        header.set_data_dtype(np.float32)
        slope, inter = 1.0, 0.0
    else:
        dtype = np.dtype(raw.dtype)
        slope = float(proxy.slope) if np.isfinite(proxy.slope) and proxy.slope != 0 else 1.0
        inter = float(proxy.inter) if np.isfinite(proxy.inter) else 0.0
        data = np.empty((raw.shape[0], raw.shape[1], 2 * n - 1), dtype=dtype)
        synth = np.flatnonzero(~acquired)
        data[:, :, 0::2] = raw
        data[:, :, synth] = _encode(np.transpose(ordered[synth], (2, 1, 0)), dtype, slope, inter)
    data = np.ascontiguousarray(np.moveaxis(data, 2, axis))
    affine = upsampled_affine(img.affine, axis)
    result = nib.Nifti1Image(data, affine, header)
    result.set_sform(affine, code=int(img.header["sform_code"]) or 1)
    result.set_qform(affine, code=int(img.header["qform_code"]) or 1)
    zooms = list(img.header.get_zooms()[:3])
    zooms[axis] /= FACTOR
    result.header.set_zooms(zooms)
    result.header.set_slope_inter(slope, inter)
    result.header["descrip"] = (
        b"slicelib x2 through-plane: odd slices SYNTHESIZED"
        if kind == "image"
        else b"slicelib x2 through-plane: predicted std map"
    )

    atomic_write(out, lambda tmp: nib.save(result, tmp))
    log.info("wrote %s (%d slices along voxel axis %d, %s)", out, 2 * n - 1, axis, kind)
    return out
