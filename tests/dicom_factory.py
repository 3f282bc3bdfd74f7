"""Write small DICOM series with pydicom for the data tests and the data benchmark.

Every slice holds a distinct, position-dependent pattern, so tests can check
the slice order and the rescale exactly: stored value = 100 + 40 * s + x + 2 * y
(s = physical slice index along the normal, x, y = column, row), and the
expected volume is ``stored * slope + intercept``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
DICOMDIR_STORAGE = "1.2.840.10008.1.3.10"

AXIAL: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SAGITTAL: tuple[float, ...] = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
CORONAL: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


def oblique_axial(degrees: float) -> tuple[float, ...]:
    """Axial rotated by ``degrees`` about the left-right axis."""
    a = np.radians(degrees)
    return (1.0, 0.0, 0.0, 0.0, float(np.cos(a)), float(np.sin(a)))


@dataclass
class SeriesSpec:
    """What was written: the files in physical order and the volume to expect."""

    folder: Path
    files: list[Path]  # ascending along the slice normal
    series_uid: str
    patient_id: str
    expected: np.ndarray  # float32 (S, H, W), rescale applied
    positions: np.ndarray  # (S, 3) ascending along the normal


def stored_pattern(n_slices: int, rows: int, cols: int) -> np.ndarray:
    """uint16 (S, rows, cols): 100 + 40 s + x + 2 y."""
    s = np.arange(n_slices)[:, None, None]
    y = np.arange(rows)[None, :, None]
    x = np.arange(cols)[None, None, :]
    return (100 + 40 * s + x + 2 * y).astype(np.uint16)


def _file_meta(sop_class: str, sop_uid: str, ts: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = UID(ts)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def _set_pixels(ds: Dataset, arr: np.ndarray, ts: str) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = arr.shape
    ds.PixelRepresentation = 0
    if ts == JPEGBaseline8Bit:
        from PIL import Image

        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        buf = io.BytesIO()
        Image.fromarray(arr.astype(np.uint8), mode="L").save(buf, "JPEG", quality=95)
        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        return
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelData = arr.astype(np.uint16).tobytes()
    if ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        ds.file_meta.TransferSyntaxUID = UID(ts)
        return
    ds.compress(UID(ts), arr.astype(np.uint16))


def write_series(
    folder: Path,
    *,
    patient_id: str = "P001",
    n_slices: int = 24,
    rows: int = 32,
    cols: int = 32,
    description: str = "t2_tse_tra",
    protocol: str | None = None,
    modality: str = "MR",
    manufacturer: str = "SIEMENS",
    model: str = "Skyra",
    field_strength: float = 3.0,
    orientation: Sequence[float] = AXIAL,
    thickness: float = 1.5,
    spacing: float = 1.5,
    pixel_spacing: tuple[float, float] = (0.6, 0.6),
    series_number: int = 5,
    series_uid: str | None = None,
    study_uid: str | None = None,
    descending: bool = False,
    scramble: bool = False,
    slope: float = 1.0,
    intercept: float = 0.0,
    transfer_syntax: str = ExplicitVRLittleEndian,
    missing: Sequence[str] = (),
    duplicate_position: bool = False,
    gap_at: int | None = None,
    truncate: bool = False,
    prefix: str = "",
    pixels: np.ndarray | None = None,
    private_bytes: int = 0,
    seed: int = 0,
) -> SeriesSpec:
    """Write one series of single-frame MR images into ``folder``; see the module docstring.

    ``descending``: instance numbers (and file names) run against the normal.
    ``scramble``: instance numbers and file names in random order.
    ``gap_at``: the slices from this index on are shifted by one extra spacing.
    ``truncate``: the middle file loses the last Rows x Columns bytes (its pixel data).
    ``pixels``: stored values (S, rows, cols) instead of the pattern.
    ``private_bytes``: a private element of this size, like a vendor's header blob.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    stored = stored_pattern(n_slices, rows, cols) if pixels is None else np.asarray(pixels)
    if transfer_syntax == JPEGBaseline8Bit:
        stored = np.clip(stored, 0, 255)
    iop = np.asarray(orientation, dtype=np.float64)
    normal = np.cross(iop[:3], iop[3:])
    origin = np.array([-10.0, -12.0, -20.0])
    offsets = np.arange(n_slices, dtype=np.float64) * spacing
    if gap_at is not None:
        offsets[gap_at:] += spacing
    positions = origin[None, :] + offsets[:, None] * normal[None, :]
    if duplicate_position:
        positions[n_slices // 2] = positions[n_slices // 2 - 1]

    order = np.arange(n_slices)
    if descending:
        order = order[::-1]
    if scramble:
        order = rng.permutation(n_slices)
    instance_of = np.empty(n_slices, dtype=np.int64)
    instance_of[order] = np.arange(1, n_slices + 1)
    names = [f"{prefix}1-{instance_of[s]:02d}.dcm" for s in range(n_slices)]
    if scramble:
        names = [f"{prefix}IM{rng.integers(1 << 40):012x}_{s}" for s in range(n_slices)]

    files: list[Path] = []
    for s in range(n_slices):
        sop_uid = generate_uid()
        ds = Dataset()
        ds.file_meta = _file_meta(MR_IMAGE_STORAGE, sop_uid, ExplicitVRLittleEndian)
        ds.SOPClassUID, ds.SOPInstanceUID = MR_IMAGE_STORAGE, sop_uid
        ds.PatientID, ds.PatientName = patient_id, patient_id
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SeriesNumber, ds.InstanceNumber = series_number, int(instance_of[s])
        ds.Modality, ds.Manufacturer, ds.ManufacturerModelName = modality, manufacturer, model
        ds.MagneticFieldStrength = f"{field_strength:g}"
        ds.SeriesDescription = description
        ds.ProtocolName = protocol if protocol is not None else description
        ds.ImageOrientationPatient = [f"{v:.6g}" for v in iop]
        ds.ImagePositionPatient = [f"{v:.6g}" for v in positions[s]]
        ds.PixelSpacing = [f"{v:g}" for v in pixel_spacing]
        ds.SliceThickness = f"{thickness:g}"
        ds.SpacingBetweenSlices = f"{spacing:g}"
        if slope != 1.0 or intercept != 0.0:
            ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
        if private_bytes:
            block = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
            block.add_new(0x10, "OB", bytes(private_bytes))
        _set_pixels(ds, stored[s], transfer_syntax)
        for keyword in missing:
            if keyword in ds:
                del ds[keyword]
        path = folder / names[s]
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    if truncate:
        victim = files[n_slices // 2]
        data = victim.read_bytes()
        victim.write_bytes(data[: len(data) - rows * cols])  # half of the pixel data
    expected = stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    return SeriesSpec(folder, files, series_uid, patient_id, expected, positions)


def write_junk(folder: Path) -> list[Path]:
    """Non-image files a real download holds: text, a thumbnail cache, a DICOMDIR."""
    folder.mkdir(parents=True, exist_ok=True)
    readme = folder / "README.txt"
    readme.write_text("downloaded from the archive\n")
    thumbs = folder / "Thumbs.db"
    thumbs.write_bytes(bytes(range(256)) * 4)
    ds = Dataset()
    uid = generate_uid()
    ds.file_meta = _file_meta(DICOMDIR_STORAGE, uid, ExplicitVRLittleEndian)
    ds.FileSetID = "SLICELIB"
    dicomdir = folder / "DICOMDIR"
    ds.save_as(dicomdir, enforce_file_format=True)
    return [readme, thumbs, dicomdir]


def write_cohort(
    root: Path, n_patients: int = 3, n_slices: int = 24, **kwargs: object
) -> list[SeriesSpec]:
    """``n_patients`` passing T2 axial series in a TCIA-like layout under ``root``."""
    specs = []
    for p in range(n_patients):
        pid = f"Prostate-MRI-US-Biopsy-{p + 1:04d}"
        folder = root / pid / "06-28-2009-NA-MRI PROSTATE-12345" / "5.000000-t2spcrstaxial-67890"
        specs.append(
            write_series(folder, patient_id=pid, n_slices=n_slices, seed=p, **kwargs)  # type: ignore[arg-type]
        )
    return specs
