"""Read a NIfTI volume into the same :class:`~slicelib.data.dicom.Volume` as DICOM."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from slicelib.data.dicom import Volume, normal
from slicelib.errors import SlicelibError

NIFTI_SUFFIX = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def is_nifti(path: Path) -> bool:
    return bool(NIFTI_SUFFIX.search(path.name))


def nifti_stem(path: Path) -> str:
    """The file name without ``.nii`` / ``.nii.gz``: the patient id of a NIfTI source."""
    return NIFTI_SUFFIX.sub("", path.name)


def load_nifti(path: str | Path) -> Volume:
    """One NIfTI file as a :class:`Volume`, slices along the third voxel axis.

    ``pixels[s] = data[:, :, s].T`` (H = second voxel axis, W = first), so that as
    in DICOM the row direction runs along the first voxel axis. Geometry is
    converted from the NIfTI (RAS) to the DICOM (LPS) patient frame; slices are
    sorted by ascending position along the normal. ``patient_id`` and
    ``series_uid`` are the file name without its suffix.
    """
    path = Path(path)
    if not path.is_file():
        raise SlicelibError(f"NIfTI file {path} does not exist")
    try:
        img: Any = nib.load(path)
        data = np.asarray(img.dataobj, dtype=np.float32)  # applies scl_slope/scl_inter
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as exc:  # nibabel raises several types for broken files
        raise SlicelibError(f"NIfTI file {path}: unreadable ({type(exc).__name__})") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise SlicelibError(f"NIfTI file {path}: expected a 3-D volume, got shape {data.shape}")

    lps = RAS_TO_LPS @ affine[:3, :3]
    zooms = np.linalg.norm(lps, axis=0)
    if np.any(zooms < 1e-6):
        raise SlicelibError(f"NIfTI file {path}: degenerate affine")
    orientation = np.concatenate([lps[:, 0] / zooms[0], lps[:, 1] / zooms[1]])
    origin = RAS_TO_LPS @ affine[:3, 3]
    positions = origin[None, :] + np.arange(data.shape[2])[:, None] * lps[:, 2][None, :]
    pixels = np.ascontiguousarray(np.transpose(data, (2, 1, 0)))
    if data.shape[2] > 1 and float(np.dot(lps[:, 2], normal(orientation))) < 0:
        pixels, positions = pixels[::-1].copy(), positions[::-1].copy()
    stem = nifti_stem(path)
    return Volume(
        pixels=pixels,
        positions=positions,
        orientation=orientation,
        pixel_spacing=(float(zooms[1]), float(zooms[0])),
        slice_spacing=float(zooms[2]),
        slice_thickness=None,
        patient_id=stem,
        series_uid=stem,
        files=[],
    )
