"""Read one DICOM series into a :class:`Volume` sorted along the slice normal.

Slices are ordered by their position projected on the slice normal (the cross
product of the two ImageOrientationPatient directions), never by InstanceNumber
or file name. RescaleSlope/RescaleIntercept are applied; compressed transfer
syntaxes (RLE, JPEG, JPEG 2000, JPEG-LS) are decoded by pydicom's pixel
backends and the pylibjpeg plugins.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from slicelib.config import ScanConfig
from slicelib.errors import SlicelibError

log = logging.getLogger(__name__)

PREAMBLE_BYTES = 132  # 128-byte preamble + b"DICM"


@dataclass
class Volume:
    """One image volume in patient space.

    ``pixels``: float32 (S, H, W) in original units (rescale applied), slice ``s``
    at ``positions[s]``, sorted by ascending position along :func:`normal`.
    ``positions``: (S, 3) mm, ImagePositionPatient (LPS) of each slice's first pixel.
    ``orientation``: (6,) ImageOrientationPatient (row direction, column direction).
    ``pixel_spacing``: (row, col) mm, i.e. (distance between rows, between columns).
    ``slice_spacing``: mm between consecutive slice centres.
    ``files``: the DICOM file of each slice, in slice order (empty for NIfTI).
    """

    pixels: np.ndarray
    positions: np.ndarray
    orientation: np.ndarray
    pixel_spacing: tuple[float, float]
    slice_spacing: float
    slice_thickness: float | None
    patient_id: str
    series_uid: str
    files: list[Path] = field(default_factory=list)

    @property
    def n_slices(self) -> int:
        return int(self.pixels.shape[0])


def normal(orientation: Sequence[float] | np.ndarray) -> np.ndarray:
    """Unit slice normal (3,) = row direction x column direction of ImageOrientationPatient."""
    iop = np.asarray(orientation, dtype=np.float64).reshape(6)
    n = np.cross(iop[:3], iop[3:])
    norm = float(np.linalg.norm(n))
    if not np.isfinite(norm) or norm < 1e-6:
        raise SlicelibError(f"degenerate ImageOrientationPatient {list(iop)}")
    return n / norm


def has_dicom_preamble(path: Path) -> bool:
    """True when the file carries the DICOM Part 10 marker ``DICM`` at byte 128."""
    try:
        with open(path, "rb") as fp:
            head = fp.read(PREAMBLE_BYTES)
    except OSError:
        return False
    return len(head) == PREAMBLE_BYTES and head[128:132] == b"DICM"


def sort_positions(
    positions: np.ndarray, orientation: np.ndarray, rel_tol: float, where: str
) -> tuple[np.ndarray, float]:
    """Order of slices along the normal and the mean spacing (mm).

    ``positions``: (S, 3). Raises :class:`SlicelibError` on duplicate positions or
    a spacing that varies by more than ``rel_tol`` (relative to the median).
    """
    along = positions @ normal(orientation)
    order = np.argsort(along, kind="stable")
    if len(order) < 2:
        return order, float("nan")
    gaps = np.diff(along[order])
    n_dup = int(np.sum(gaps < 1e-3))
    if n_dup:
        raise SlicelibError(f"{where}: {n_dup} duplicate slice position(s)")
    median = float(np.median(gaps))
    if float(np.max(np.abs(gaps - median))) > rel_tol * median:
        raise SlicelibError(
            f"{where}: non-uniform slice spacing ({gaps.min():.2f}-{gaps.max():.2f} mm; "
            "a slice may be missing)"
        )
    return order, float(np.mean(gaps))


def series_files(path_or_files: str | Path | Iterable[str | Path]) -> list[Path]:
    """The DICOM files of a folder (not recursive, non-DICOM files skipped) or a list."""
    if isinstance(path_or_files, (str, Path)):
        folder = Path(path_or_files)
        if not folder.exists():
            raise SlicelibError(f"series folder {folder} does not exist")
        if folder.is_file():
            return [folder]
        files = sorted(p for p in folder.iterdir() if p.is_file() and has_dicom_preamble(p))
        if not files:
            raise SlicelibError(f"no DICOM files in {folder}")
        return files
    files = [Path(p) for p in path_or_files]
    if not files:
        raise SlicelibError("no files given for the series")
    return files


def _read(path: Path) -> Dataset:
    try:
        with warnings.catch_warnings():
            # pydicom warns about damaged files; the checks below say what is wrong.
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises many types for broken files
        raise SlicelibError(f"file {path}: unreadable DICOM ({_short(exc)})") from None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _floats(ds: Dataset, keyword: str, n: int, path: Path) -> np.ndarray:
    value = ds.get(keyword)
    if value is None or value == "":
        raise SlicelibError(f"file {path}: missing {keyword}")
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        raise SlicelibError(f"file {path}: invalid {keyword} {value!r}") from None
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise SlicelibError(f"file {path}: invalid {keyword} {list(value)}")
    return arr


def decode_pixels(ds: Dataset, path: Path) -> np.ndarray:
    """Pixels of one single-frame, single-channel image as float32 (H, W), rescale applied."""
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise SlicelibError(f"file {path}: multi-frame images are not supported")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise SlicelibError(f"file {path}: colour images are not supported")
    if "PixelData" not in ds:
        raise SlicelibError(f"file {path}: no pixel data")
    try:
        arr = ds.pixel_array
    except Exception as exc:  # truncated data, missing decoder, corrupt stream
        raise SlicelibError(f"file {path}: pixel data unreadable ({_short(exc)})") from None
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    out = arr.astype(np.float32)
    if slope != 1.0 or intercept != 0.0:
        out = out * np.float32(slope) + np.float32(intercept)
    return out


def load_series(
    path_or_files: str | Path | Iterable[str | Path],
    *,
    spacing_rel_tol: float = ScanConfig.spacing_rel_tol,
) -> Volume:
    """Read one series (a folder, not recursive, or a list of files) into a :class:`Volume`.

    Raises :class:`SlicelibError` (one line naming the file or folder) on mixed
    series, missing or duplicate positions, non-uniform spacing, differing
    orientation or image size, and unreadable or truncated files.
    """
    files = series_files(path_or_files)
    where = str(Path(path_or_files)) if isinstance(path_or_files, (str, Path)) else "series"
    datasets = [_read(p) for p in files]

    for ds, path in zip(datasets, files):
        if not ds.get("SeriesInstanceUID"):
            raise SlicelibError(f"file {path}: missing SeriesInstanceUID (truncated header?)")
    uids = sorted({str(ds.SeriesInstanceUID) for ds in datasets})
    if len(uids) > 1:
        raise SlicelibError(
            f"{where}: {len(uids)} series mixed ({', '.join(uids[:3])}); "
            "load the files of one series"
        )
    where = f"series {uids[0]}"

    orientations = np.stack(
        [_floats(ds, "ImageOrientationPatient", 6, p) for ds, p in zip(datasets, files)]
    )
    if float(np.max(np.abs(orientations - orientations[0]))) > 1e-3:
        raise SlicelibError(f"{where}: slices differ in ImageOrientationPatient")
    positions = np.stack(
        [_floats(ds, "ImagePositionPatient", 3, p) for ds, p in zip(datasets, files)]
    )
    spacing = _floats(datasets[0], "PixelSpacing", 2, files[0])
    order, slice_spacing = sort_positions(positions, orientations[0], spacing_rel_tol, where)

    slices = [decode_pixels(datasets[i], files[i]) for i in order]
    shapes = {s.shape for s in slices}
    if len(shapes) > 1:
        raise SlicelibError(f"{where}: slices differ in size ({sorted(shapes)})")
    thickness = datasets[0].get("SliceThickness")
    return Volume(
        pixels=np.stack(slices).astype(np.float32, copy=False),
        positions=positions[order],
        orientation=orientations[0],
        pixel_spacing=(float(spacing[0]), float(spacing[1])),
        slice_spacing=slice_spacing,
        slice_thickness=float(thickness) if thickness not in (None, "") else None,
        patient_id=str(datasets[0].get("PatientID", "")),
        series_uid=uids[0],
        files=[files[i] for i in order],
    )
