"""Read a NIfTI volume into the same :class:`~slicelib.data.dicom.Volume` as DICOM.

The through-plane (slice) axis of a NIfTI file is not fixed by the format. It is
chosen by :func:`slice_axis`, first rule that applies:

1. ``slice_axis`` given by the user (``PrepareConfig.slice_axis``,
   ``slicelib prepare --slice-axis``);
2. the header's ``dim_info`` slice dimension, when the writer set it;
3. the voxel axis of largest spacing, when one axis is clearly the coarsest
   (more than :data:`SPACING_REL_TOL` above the others): the acquisition direction
   of a thick-slice scan;
4. otherwise (isotropic voxels, or two axes tied) the third voxel axis,
   :data:`DEFAULT_SLICE_AXIS`, which is where most writers put the slices.

Before any voxel is read (a 4 MB ``.nii.gz`` can inflate to gigabytes), the header's
shape and voxel type are checked: a volume or a slice larger than its cap
(``ScanConfig.max_volume_mb`` and ``max_slice_mb``, ``--max-volume-mb`` and
``--max-slice-mb``) and a voxel type without one real intensity per voxel (complex,
RGB, boolean, extended precision) are refused in one line naming the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np

from slicelib.config import ScanConfig
from slicelib.data.dicom import Volume, normal
from slicelib.errors import SlicelibError

NIFTI_SUFFIX = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
DEFAULT_SLICE_AXIS = 2
# An axis is "of largest spacing" only if it exceeds every other by more than this
# fraction: resampling leaves rounding noise in nominally isotropic spacings.
SPACING_REL_TOL = 0.01
MIN_SPACING_MM = 1e-6

SliceAxisRule = Literal["option", "dim_info", "largest spacing", "default"]
# Voxels are read into float32: this many bytes each at least (more for wider types,
# which numpy reads whole before converting).
FLOAT32_BYTES = 4
MB = 2**20


@dataclass(frozen=True)
class SliceAxis:
    """The through-plane voxel axis (0, 1 or 2) and the rule that chose it."""

    axis: int
    rule: SliceAxisRule


def is_nifti(path: Path) -> bool:
    return bool(NIFTI_SUFFIX.search(path.name))


def nifti_stem(path: Path) -> str:
    """The file name without ``.nii`` / ``.nii.gz``: the patient id of a NIfTI source."""
    return NIFTI_SUFFIX.sub("", path.name)


def check_slice_axis(axis: int | None) -> None:
    """One-line error unless ``axis`` is None or a voxel axis 0, 1 or 2."""
    if axis is not None and (isinstance(axis, bool) or axis not in (0, 1, 2)):
        raise SlicelibError(f"slice_axis must be 0, 1, 2 or None (from the header), got {axis!r}")


def _open(path: Path) -> Any:
    if not path.is_file():
        raise SlicelibError(f"NIfTI file {path} does not exist")
    try:
        return nib.load(path)
    except Exception as exc:  # nibabel raises several types for broken files
        raise SlicelibError(f"NIfTI file {path}: unreadable ({type(exc).__name__})") from None


def _volume_shape(img: Any, path: Path) -> tuple[int, int, int]:
    """The 3-D shape, trailing length-1 axes dropped; one-line error for 2-D or 4-D data."""
    shape = tuple(int(n) for n in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) < 3 or (len(shape) == 3 and shape[2] == 1 and min(shape[:2]) > 1):
        raise SlicelibError(
            f"NIfTI file {path}: a 2-D image (shape {img.shape}); slicelib needs a 3-D volume"
        )
    if len(shape) > 3:
        raise SlicelibError(
            f"NIfTI file {path}: {len(shape)}-D data (shape {img.shape}, e.g. a time series); "
            "slicelib needs a single 3-D volume"
        )
    return shape[0], shape[1], shape[2]


def check_voxel_type(img: Any, path: Path) -> np.dtype:
    """The header's voxel type; one-line error unless it is an integer or a real float of
    at most 64 bits: a complex value has two intensities, an RGB voxel three, a boolean
    none to interpolate, and wider floats are not kept by every platform's numpy."""
    dtype = np.dtype(img.header.get_data_dtype())
    usable = dtype.kind in "iu" or (dtype.kind == "f" and dtype.itemsize <= 8)
    if dtype.fields is not None or not usable:
        label = "RGB" if dtype.fields else dtype.name
        raise SlicelibError(
            f"NIfTI file {path}: voxel type {label} is not usable: slicelib needs one real "
            "intensity per voxel (integers, float32 or float64)"
        )
    return dtype


def check_size(
    img: Any,
    path: Path,
    shape: tuple[int, int, int],
    axis: int,
    max_slice_mb: float,
    max_volume_mb: float,
) -> None:
    """Refuse, from the header alone, a volume or a slice (the plane across ``axis``)
    larger than its cap once read as float32."""
    per_voxel = max(FLOAT32_BYTES, np.dtype(img.header.get_data_dtype()).itemsize)
    dims = " x ".join(str(n) for n in shape)
    volume_mb = float(np.prod(shape, dtype=np.float64)) * per_voxel / MB
    if volume_mb > max_volume_mb:
        raise SlicelibError(
            f"NIfTI file {path}: a volume of {dims} voxels ({volume_mb:.3g} MB as float32) "
            f"exceeds the {max_volume_mb:g} MB cap (--max-volume-mb raises it)"
        )
    plane = [n for a, n in enumerate(shape) if a != axis]
    slice_mb = float(np.prod(plane, dtype=np.float64)) * per_voxel / MB
    if slice_mb > max_slice_mb:
        raise SlicelibError(
            f"NIfTI file {path}: slices of {plane[0]} x {plane[1]} voxels ({dims} in all, "
            f"{slice_mb:.3g} MB each as float32) exceed the {max_slice_mb:g} MB cap "
            "(--max-slice-mb raises it)"
        )


def _raw_pixdim(img: Any, path: Path) -> np.ndarray:
    """pixdim[1:4] as stored: nibabel's checks on loading replace zeros by 1 (with a
    warning), which would hide a broken header."""
    try:
        with nib.openers.ImageOpener(str(path)) as f:
            raw = type(img.header).from_fileobj(f, check=False)
        return np.asarray(raw["pixdim"][1:4], dtype=np.float64)
    except Exception as exc:
        raise SlicelibError(
            f"NIfTI file {path}: unreadable header ({type(exc).__name__})"
        ) from None


def _spacing(img: Any, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(LPS direction-and-step matrix (3, 3), voxel spacing (3,) mm); errors for bad headers."""
    zooms = _raw_pixdim(img, path)
    bad_pixdim = [i for i in range(3) if not (np.isfinite(zooms[i]) and zooms[i] != 0)]
    if bad_pixdim:
        raise SlicelibError(
            f"NIfTI file {path}: voxel spacing (pixdim) {zooms.tolist()} is zero or NaN "
            f"along axis {bad_pixdim[0]}"
        )
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        raise SlicelibError(f"NIfTI file {path}: the affine holds NaN or infinite values")
    lps = RAS_TO_LPS @ affine[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    bad = [i for i in range(3) if spacing[i] < MIN_SPACING_MM]
    if bad:
        raise SlicelibError(
            f"NIfTI file {path}: zero voxel spacing along axis {bad[0]} "
            f"(spacing {np.round(spacing, 6).tolist()} mm)"
        )
    if abs(np.linalg.det(lps)) < MIN_SPACING_MM**3:
        raise SlicelibError(
            f"NIfTI file {path}: degenerate affine (voxel axes are not independent)"
        )
    return lps, spacing


def _resolve(img: Any, spacing: np.ndarray, requested: int | None) -> SliceAxis:
    if requested is not None:
        return SliceAxis(int(requested), "option")
    get_dim_info = getattr(img.header, "get_dim_info", None)
    if get_dim_info is not None:
        slice_dim = get_dim_info()[2]
        if slice_dim is not None and 0 <= int(slice_dim) <= 2:
            return SliceAxis(int(slice_dim), "dim_info")
    order = np.argsort(spacing)[::-1]
    if spacing[order[0]] > spacing[order[1]] * (1.0 + SPACING_REL_TOL):
        return SliceAxis(int(order[0]), "largest spacing")
    return SliceAxis(DEFAULT_SLICE_AXIS, "default")


def slice_axis(path: str | Path, requested: int | None = None) -> SliceAxis:
    """The through-plane axis of the NIfTI file at ``path`` (header only; see the module doc).

    Raises :class:`SlicelibError` naming the file for a 2-D or 4-D image, a zero, NaN
    or degenerate voxel spacing, or an invalid ``requested`` axis.
    """
    check_slice_axis(requested)
    path = Path(path)
    img = _open(path)
    _volume_shape(img, path)
    _, spacing = _spacing(img, path)
    return _resolve(img, spacing, requested)


def load_nifti(
    path: str | Path,
    slice_axis: int | None = None,
    *,
    max_slice_mb: float = ScanConfig.max_slice_mb,
    max_volume_mb: float = ScanConfig.max_volume_mb,
) -> Volume:
    """One NIfTI file as a :class:`Volume`, slices along its through-plane axis.

    ``slice_axis``: 0, 1 or 2, or None to take it from the header (see the module
    doc). With ``a`` the slice axis and ``i < j`` the other two voxel axes,
    ``pixels[s] = data[..., s along a].T``: H runs along ``j``, W along ``i``, so
    that as in DICOM the row direction runs along the lower voxel axis. For the
    third axis this is ``data[:, :, s].T``. Geometry is converted from the NIfTI
    (RAS) to the DICOM (LPS) patient frame; slices are sorted by ascending position
    along the normal. ``patient_id`` and ``series_uid`` are the file name without its
    suffix. The voxel type and the size (``max_slice_mb``, ``max_volume_mb``) are
    checked from the header before any voxel is read (see the module docstring).
    """
    check_slice_axis(slice_axis)
    path = Path(path)
    img = _open(path)
    shape = _volume_shape(img, path)
    check_voxel_type(img, path)
    lps, spacing = _spacing(img, path)
    axis = _resolve(img, spacing, slice_axis).axis
    check_size(img, path, shape, axis, max_slice_mb, max_volume_mb)
    try:
        data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape)  # applies scl_slope
    except Exception as exc:
        raise SlicelibError(f"NIfTI file {path}: unreadable ({type(exc).__name__})") from None
    if not np.all(np.isfinite(data)):
        raise SlicelibError(f"NIfTI file {path}: the image holds NaN or infinite values")

    i, j = (a for a in range(3) if a != axis)
    data = np.moveaxis(data, axis, 2)  # (n_i, n_j, n_slices)
    lps, spacing = lps[:, [i, j, axis]], spacing[[i, j, axis]]
    orientation = np.concatenate([lps[:, 0] / spacing[0], lps[:, 1] / spacing[1]])
    origin = RAS_TO_LPS @ np.asarray(img.affine, dtype=np.float64)[:3, 3]
    positions = origin[None, :] + np.arange(data.shape[2])[:, None] * lps[:, 2][None, :]
    pixels = np.ascontiguousarray(np.transpose(data, (2, 1, 0)))
    if data.shape[2] > 1 and float(np.dot(lps[:, 2], normal(orientation))) < 0:
        pixels, positions = pixels[::-1].copy(), positions[::-1].copy()
    stem = nifti_stem(path)
    return Volume(
        pixels=pixels,
        positions=positions,
        orientation=orientation,
        pixel_spacing=(float(spacing[1]), float(spacing[0])),
        slice_spacing=float(spacing[2]),
        slice_thickness=None,
        patient_id=stem,
        series_uid=stem,
        files=[],
    )
