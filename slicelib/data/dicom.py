"""Read one DICOM series into a :class:`Volume` sorted along the slice normal.

Slices are ordered by their position projected on the slice normal (the cross
product of the two ImageOrientationPatient directions), never by InstanceNumber
or file name. RescaleSlope/RescaleIntercept are applied; compressed transfer
syntaxes (RLE, JPEG, JPEG 2000, JPEG-LS) are decoded by pydicom's pixel
backends and the pylibjpeg plugins.

Header values go through :func:`slicelib.data.headers.dataset_value`, so a
damaged value is a one-line :class:`SlicelibError` naming the file, never a
stray exception. Sizes are checked from the header before any pixel is decoded;
rescale values are checked across the series (:func:`check_rescale`) and decoded
values against the stored bit depth.
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
from slicelib.data.headers import captured_warnings, dataset_value
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


def read_dataset(path: Path) -> Dataset:
    """One DICOM file (pixel data included); pydicom's warnings are logged with ``path``;
    an unreadable file is a one-line :class:`SlicelibError`."""
    try:
        with captured_warnings() as caught:
            ds = pydicom.dcmread(path, force=not has_dicom_preamble(path))
    except Exception as exc:  # pydicom raises many types for broken files
        raise SlicelibError(f"file {path}: unreadable DICOM ({_short(exc)})") from None
    finally:
        _log_warnings(path, locals().get("caught", []))
    return ds


def _log_warnings(path: Path, caught: list[warnings.WarningMessage]) -> None:
    """pydicom's warnings, logged once each with the file that caused them."""
    for message in dict.fromkeys(str(w.message).splitlines()[0][:200] for w in caught):
        log.warning("pydicom warning for %s: %s", path, message)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _floats(ds: Dataset, keyword: str, n: int, path: Path, positive: bool = False) -> np.ndarray:
    got = dataset_value(ds, keyword, "vector", n, positive=positive)
    if got.reason:
        raise SlicelibError(f"file {path}: {got.reason}")
    return np.asarray(got.value, dtype=np.float64)


def _int(ds: Dataset, keyword: str, path: Path, default: int) -> int:
    """An integer tag that may be absent (then ``default``) but not damaged."""
    got = dataset_value(ds, keyword, "int")
    if got.value is None and got.reason.startswith("missing"):
        return default
    if got.reason:
        raise SlicelibError(f"file {path}: {got.reason}")
    value: int = got.value
    return value


def rescale_of(ds: Dataset, path: Path) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept) of one file: (1, 0) when absent; a damaged,
    non-finite or zero slope raises :class:`SlicelibError` naming the file."""
    values = []
    for keyword, default in (("RescaleSlope", 1.0), ("RescaleIntercept", 0.0)):
        got = dataset_value(ds, keyword, "number")
        if got.reason and not got.reason.startswith("missing"):
            raise SlicelibError(f"file {path}: {got.reason}")
        values.append(default if got.value is None else float(got.value))
    if values[0] == 0.0:
        raise SlicelibError(f"file {path}: RescaleSlope 0 (every pixel would be equal)")
    return values[0], values[1]


def check_image_size(ds: Dataset, path: Path, max_slice_mb: float) -> int:
    """Refuse, from the header alone, an image larger than ``max_slice_mb`` decoded;
    returns its number of values (rows x columns x frames x samples)."""
    rows, cols = _int(ds, "Rows", path, 0), _int(ds, "Columns", path, 0)
    frames = _int(ds, "NumberOfFrames", path, 1)
    samples = _int(ds, "SamplesPerPixel", path, 1)
    bits = _int(ds, "BitsAllocated", path, 16)
    if rows <= 0 or cols <= 0:
        raise SlicelibError(f"file {path}: invalid image size {rows} x {cols}")
    if bits not in (1, 8, 16, 32, 64):
        raise SlicelibError(f"file {path}: invalid BitsAllocated {bits}")
    size_mb = rows * cols * max(frames, 1) * max(samples, 1) * max(bits, 8) / 8 / 2**20
    if size_mb > max_slice_mb:
        raise SlicelibError(
            f"file {path}: image of {rows} x {cols} x {frames} ({size_mb:.0f} MB) exceeds "
            f"the {max_slice_mb:g} MB cap (max_slice_mb)"
        )
    return rows * cols * max(frames, 1) * max(samples, 1)


def stored_range(ds: Dataset, path: Path) -> tuple[int, int]:
    """The range of values the stored bit depth allows (BitsStored, PixelRepresentation)."""
    bits = _int(ds, "BitsStored", path, _int(ds, "BitsAllocated", path, 16))
    signed = _int(ds, "PixelRepresentation", path, 0) == 1
    if not 1 <= bits <= 64:
        raise SlicelibError(f"file {path}: invalid BitsStored {bits}")
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def decode_stored(
    ds: Dataset, path: Path, max_slice_mb: float = ScanConfig.max_slice_mb
) -> np.ndarray:
    """Stored values of one single-frame, single-channel image (H, W), no rescale.

    The size is checked from the header first; values outside the stored bit
    depth's range (corrupt compressed data) raise :class:`SlicelibError`.
    """
    check_image_size(ds, path, max_slice_mb)
    if _int(ds, "NumberOfFrames", path, 1) > 1:
        raise SlicelibError(f"file {path}: multi-frame images are not supported")
    if _int(ds, "SamplesPerPixel", path, 1) != 1:
        raise SlicelibError(f"file {path}: colour images are not supported")
    if "PixelData" not in ds:
        raise SlicelibError(f"file {path}: no pixel data")
    try:
        with captured_warnings() as caught:
            arr = np.asarray(ds.pixel_array)
    except Exception as exc:  # truncated data, missing decoder, corrupt stream
        raise SlicelibError(f"file {path}: pixel data unreadable ({_short(exc)})") from None
    finally:
        _log_warnings(path, locals().get("caught", []))
    if arr.ndim != 2:
        raise SlicelibError(f"file {path}: pixel data of shape {arr.shape} (want one 2-D image)")
    lo, hi = stored_range(ds, path)
    if arr.size and (int(arr.min()) < lo or int(arr.max()) > hi):
        raise SlicelibError(
            f"file {path}: decoded values {int(arr.min())}..{int(arr.max())} outside the "
            f"stored range {lo}..{hi} (corrupt pixel data?)"
        )
    return arr


def decode_pixels(
    ds: Dataset, path: Path, max_slice_mb: float = ScanConfig.max_slice_mb
) -> np.ndarray:
    """Pixels of one single-frame, single-channel image as float32 (H, W), rescale applied."""
    arr = decode_stored(ds, path, max_slice_mb)
    slope, intercept = rescale_of(ds, path)
    out = arr.astype(np.float32)
    if slope != 1.0 or intercept != 0.0:
        out = out * np.float32(slope) + np.float32(intercept)
    return out


def check_rescale(
    rescale: list[tuple[float, float]], stored: list[np.ndarray], files: Sequence[Path]
) -> None:
    """Refuse a slice whose RescaleSlope/RescaleIntercept would rescale the volume.

    Slopes may differ per slice (a writer fitting each slice's range into 16 bits
    does that), so values are compared after rescaling: a slice whose rescaled
    range reaches beyond the other slices' range by more than that range's width
    (a slope of 100, 1e30 or -1, an intercept off by thousands in one file) would
    more than double the volume's min-max normalisation alone, and is refused
    naming its file.
    """
    if len(rescale) < 2:
        return
    lo = np.asarray([float(a.min()) * s + b for a, (s, b) in zip(stored, rescale)])
    hi = np.asarray([float(a.max()) * s + b for a, (s, b) in zip(stored, rescale)])
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)  # a negative slope swaps the ends
    for i, path in enumerate(files):
        others_lo, others_hi = np.delete(lo, i).min(), np.delete(hi, i).max()
        span = max(float(others_hi - others_lo), 1e-6 * max(abs(others_hi), 1.0))
        if not (np.isfinite(lo[i]) and np.isfinite(hi[i])) or (
            lo[i] < others_lo - span or hi[i] > others_hi + span
        ):
            slope, intercept = rescale[i]
            raise SlicelibError(
                f"file {path}: RescaleSlope {slope:g} / RescaleIntercept {intercept:g} give "
                f"values {lo[i]:.4g}..{hi[i]:.4g}, far outside the other slices' "
                f"{others_lo:.4g}..{others_hi:.4g}"
            )


def load_series(
    path_or_files: str | Path | Iterable[str | Path],
    *,
    spacing_rel_tol: float = ScanConfig.spacing_rel_tol,
    max_slice_mb: float = ScanConfig.max_slice_mb,
    max_volume_mb: float = ScanConfig.max_volume_mb,
) -> Volume:
    """Read one series (a folder, not recursive, or a list of files) into a :class:`Volume`.

    Raises :class:`SlicelibError` (one line naming the file or folder) on mixed
    series, missing or duplicate positions, non-uniform spacing, differing
    orientation or image size, unreadable or truncated files, and an image or a
    series larger than ``max_slice_mb`` or ``max_volume_mb`` (from the headers).
    """
    files = series_files(path_or_files)
    where = str(Path(path_or_files)) if isinstance(path_or_files, (str, Path)) else "series"
    datasets = [read_dataset(p) for p in files]

    uid_of = []
    for ds, path in zip(datasets, files):
        got = dataset_value(ds, "SeriesInstanceUID", "uid")
        if got.reason:
            raise SlicelibError(f"file {path}: {got.reason} (truncated header?)")
        uid_of.append(got.value)
    uids = sorted(set(uid_of))
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
    spacing = _floats(datasets[0], "PixelSpacing", 2, files[0], positive=True)
    order, slice_spacing = sort_positions(positions, orientations[0], spacing_rel_tol, where)

    # every size from the headers before the first pixel is decoded
    values = sum(check_image_size(datasets[i], files[i], max_slice_mb) for i in order)
    volume_mb = values * np.dtype(np.float32).itemsize / 2**20
    if volume_mb > max_volume_mb:
        raise SlicelibError(
            f"{where} ({len(order)} images, {volume_mb:.3g} MB as float32) exceeds the "
            f"{max_volume_mb:g} MB cap (--max-volume-mb)"
        )
    stored = [decode_stored(datasets[i], files[i], max_slice_mb) for i in order]
    shapes = {s.shape for s in stored}
    if len(shapes) > 1:
        raise SlicelibError(f"{where}: slices differ in size ({sorted(shapes)})")
    rescale = [rescale_of(datasets[i], files[i]) for i in order]
    check_rescale(rescale, stored, [files[i] for i in order])
    slices = [
        a.astype(np.float32) * np.float32(s) + np.float32(b) for a, (s, b) in zip(stored, rescale)
    ]
    thickness = dataset_value(datasets[0], "SliceThickness", "number").value
    pixels = np.stack(slices).astype(np.float32, copy=False)
    if not np.all(np.isfinite(pixels)):
        raise SlicelibError(f"{where}: rescaled pixels are not finite (RescaleSlope too large?)")
    return Volume(
        pixels=pixels,
        positions=positions[order],
        orientation=orientations[0],
        pixel_spacing=(float(spacing[0]), float(spacing[1])),
        slice_spacing=slice_spacing,
        slice_thickness=thickness,
        patient_id=dataset_value(datasets[0], "PatientID", "text").value or "",
        series_uid=uids[0],
        files=[files[i] for i in order],
    )
